"""Streamlit widgets of the PACS source: Predict's "From PACS" and Evaluate's labelled studies. UI only: the
DICOMweb client, the limits, the study list and the write-back are in medclf_core.pacs.

What stays off the page: patient names and IDs from the PACS (a study is shown by its date, modalities
and counts; a series by modality, body part and description), and the password (a password field, or
``MEDCLF_PACS_PASSWORD`` on the server; never echoed, never in a message).
"""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd
import streamlit as st

from app_ui import md_escape
from medclf_core.pacs.client import PASSWORD_ENV, USER_ENV, PacsConnection, PacsError
from medclf_core.pacs.labels import instance_labels, study_labels

URL_ENV = "MEDCLF_PACS_URL"
DEFAULT_URL = "http://127.0.0.1:8042/dicom-web"
MAX_STUDIES_SHOWN = 50
MAX_PICKED = 16  # instances classified at once on the Predict page (a CT series may hold hundreds)
MODALITIES = ["", "CR", "DX", "CT", "MR", "US", "MG", "XA", "NM", "PT", "OT"]


def connection(prefix: str) -> PacsConnection | None:
    """The DICOMweb address and credentials (typed, else from the server's environment); None with a
    message when the address is not usable. Drawn inside a form (with the button that uses them): a browser
    that tabs from a password field to its show/hide toggle would not hand the typed password over otherwise."""
    url = st.text_input("PACS DICOMweb address", value=os.environ.get(URL_ENV) or DEFAULT_URL, key=f"{prefix}-url",
                        help="The DICOMweb root of the PACS, e.g. Orthanc's http://127.0.0.1:8042/dicom-web "
                             "(scripts/pacs.sh start runs one with the bundled samples).")
    c1, c2 = st.columns(2)
    env_user, env_password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    user = c1.text_input("PACS user", key=f"{prefix}-user",
                         placeholder=f"from {USER_ENV} on the server" if env_user else "none")
    password = c2.text_input("PACS password", type="password", key=f"{prefix}-password",
                             placeholder=f"from {PASSWORD_ENV} on the server" if env_password else "none")
    try:
        typed = bool(user.strip() or password)  # a refusal then says to check what was typed, not the environment
        return PacsConnection(url, user.strip() or env_user or None, password or env_password or None, typed=typed)
    except PacsError as exc:
        st.warning(md_escape(exc))
        return None


def _remember(key: str, compute, what: str):
    """``compute()`` kept in this session under ``key``; a PACS fault shows its message (nothing kept lost)."""
    store = st.session_state.setdefault("_pacs_lists", {})
    if key not in store:
        try:
            with st.spinner(f"{what} ..."):
                store[key] = compute()
        except PacsError as exc:
            st.error(md_escape(exc))
            return None
    return store[key]


def _series_label(s) -> str:
    bits = [s.modality or "?", s.body_part or "body part not stated", s.description or "",
            f"{s.n_instances} instance(s)" if s.n_instances is not None else ""]
    return f"Series {s.series_number if s.series_number is not None else '?'}: " + " · ".join(b for b in bits if b)


def search() -> tuple[PacsConnection | None, list]:
    """The connection, the search filters and button (one form); the connection and the studies found
    (kept in the session until the next search)."""
    with st.form("pacs-search-form", border=False):
        conn = connection("pacs")
        submitted, patient, date, modality = _search_fields()
    if submitted and conn is not None:
        try:
            with st.spinner("Searching the PACS ..."):
                found = conn.search_studies(patient_id=patient.strip() or None, study_date=date,
                                            modality=modality or None, limit=MAX_STUDIES_SHOWN)
            st.session_state["_pacs_studies"] = found
            st.session_state["_pacs_lists"] = {}
        except PacsError as exc:
            st.error(md_escape(exc))  # the earlier results and picks stay
    found = st.session_state.get("_pacs_studies")
    if found is not None and not found:
        st.info("No study in the PACS matches these filters.")
    elif found and len(found) >= MAX_STUDIES_SHOWN:
        st.caption(f"Showing the first {MAX_STUDIES_SHOWN} studies; narrow the search to see others.")
    return conn, found or []


def _search_fields():
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    patient = c1.text_input("Patient ID", key="pacs-patient", help="Exact patient ID; empty: any patient. "
                            "It is only sent to the PACS, never shown with the results.")
    date = c2.date_input("Study date", value=None, min_value=dt.date(1900, 1, 1), key="pacs-date",
                         help="Empty: any date.")
    modality = c3.selectbox("Modality", MODALITIES, key="pacs-modality", format_func=lambda m: m or "any")
    c4.write("")
    submitted = c4.form_submit_button("Search", type="primary", key="pacs-search")
    return submitted, patient, date, modality


def pick_instances(conn: PacsConnection, studies: list) -> tuple[list, object, object] | None:
    """Study, series and instances chosen; ``(instance records, study, series)`` or None."""
    labels = dict(zip((s.study_uid for s in studies), study_labels(studies), strict=True))  # each one distinct
    study = st.selectbox("Study", studies, format_func=lambda s: labels[s.study_uid], key="pacs-study",
                         help="Date · modalities · counts · the end of the Study Instance UID. Patient names and "
                              "IDs are not shown.")
    if study is None:
        return None
    series = _remember(("series", conn.url, study.study_uid), lambda: conn.list_series(study.study_uid),
                       "Listing the study's series")
    if series is None:
        return None
    if not series:
        st.warning("This study holds no series in the PACS: nothing to classify.")
        return None
    st.dataframe(pd.DataFrame([{"series": s.series_number, "modality": s.modality, "body part": s.body_part,
                                "description": s.description, "instances": s.n_instances,
                                "images": "yes" if s.is_image else "no (report or document)"} for s in series]),
                 hide_index=True, width="stretch", key="pacs-series-table")
    images = [s for s in series if s.is_image]
    if not images:
        st.warning("This study holds no image series (only reports or documents such as SR or PDF): "
                   "nothing to classify.")
        return None
    chosen = st.selectbox("Series", images, format_func=_series_label, key="pacs-series")
    records = _remember(("instances", conn.url, study.study_uid, chosen.series_uid),
                        lambda: conn.instances(study.study_uid, chosen.series_uid), "Listing the series' instances")
    if records is None:
        return None
    records = [r for r in records if r["is_image"]]
    if not records:
        st.warning("This series holds no image instances: nothing to classify.")
        return None
    if len(records) > MAX_PICKED:
        st.info(f"This series has {len(records)} images; at most {MAX_PICKED} are classified at once. The first "
                f"{MAX_PICKED} are chosen below; pick others to see them.")
    # distinct words per instance: the multiselect keys its options by them (two "image 3" were one option)
    names = instance_labels(records)
    numbers = list(range(len(records)))
    picked = st.multiselect("Images", numbers, default=numbers[:MAX_PICKED], max_selections=MAX_PICKED,
                            key=f"pacs-instances-{chosen.series_uid}", format_func=lambda i: names[i])
    return [{**records[i], "label": names[i]} for i in dict.fromkeys(picked)], study, chosen


def predict_source() -> None:
    """The whole "From PACS" panel; the fetched instances go to ``st.session_state["pacs_fetched"]``."""
    conn, studies = search()
    if conn is None or not studies:
        return
    got = pick_instances(conn, studies)
    if got is None or not got[0]:
        return
    records, study, series = got
    if st.button(f"Classify {len(records)} image(s) from the PACS", type="primary", key="pacs-fetch"):
        fetched = []
        try:
            with st.spinner(f"Fetching {len(records)} image(s) from the PACS ..."):
                for r in records:
                    data = conn.fetch_instance(study.study_uid, series.series_uid, r["sop_instance_uid"])
                    fetched.append({"name": f"PACS {series.modality or ''} series {series.series_number or '?'} "
                                            f"{r['label']}.dcm",
                                    "data": data, "study_uid": study.study_uid, "series_uid": series.series_uid,
                                    "sop_uid": r["sop_instance_uid"]})
        except PacsError as exc:
            st.error(md_escape(exc))  # what was classified before stays on the page
            return
        st.session_state["pacs_fetched"] = fetched
        st.session_state["pacs_conn"] = conn  # the write-back goes to the same PACS, with the same credentials
        st.session_state.pop("pacs_written", None)


def written_message(written: list[dict]) -> str:
    """What a write-back stored, in words (one line per image)."""
    lines = []
    for w in written:
        kinds = [f"a Structured Report ({w['sr']})"]
        if w.get("sc"):
            kinds.append(f"a Secondary Capture of the heat map ({w['sc']})")
        if w.get("pdf"):
            kinds.append(f"the PDF report as Encapsulated PDF ({w['pdf']})")
        lines.append(f"- {md_escape(w['name'])}: " + ", ".join(kinds))
    return ("Written to the study in the PACS as new series (SOP Instance UIDs in brackets):\n" + "\n".join(lines))
