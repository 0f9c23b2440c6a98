"""The site calibrations in the app: the sidebar's picker, the card the Evaluate page reads, the Predict page's
caption and the Evaluate page's "adopt as this site's calibration" (``medclf recalibrate``'s work, by upload).

UI only: fitting, checking and storing a site's calibration are medclf_core.trust.sites and
medclf_core.inference.sites.
"""

from __future__ import annotations

import streamlit as st

from medclf_core.errors import MedclfError, user_message
from medclf_core.server.text import md_escape

CARD_CALIBRATION = "Card calibration"


def sidebar_site_picker(card) -> str | None:
    """A calibration picker under the model picker, only when the model has site calibrations
    (``sites/<name>.json``, from ``medclf recalibrate`` or the Evaluate page): the card's (default) or a
    site's. The choice is kept per model in ``session_state["site_name"]``; the Predict page uses it."""
    from medclf_core.trust.sites import list_sites

    sites = list_sites(card.get("run_dir"))
    if st.session_state.get("site_model") != card["name"] or st.session_state.get("site_name") not in [None, *sites]:
        st.session_state["site_model"], st.session_state["site_name"] = card["name"], None  # another model
    if not sites:
        return None
    st.selectbox("Calibration", [None, *sites], key="site_name",
                 format_func=lambda s: CARD_CALIBRATION if s is None else f"Site: {s}",
                 help="The model card's temperature and threshold, or those a site fitted on its own labelled "
                      "images (`medclf recalibrate`, or the Evaluate page). Used by the Predict page.")
    return st.session_state["site_name"]


def card_in_use(card: dict) -> dict:
    """``card`` as calibrated by the site picked in the sidebar (:func:`medclf_core.trust.sites.site_card`: its
    temperature and threshold), or ``card`` itself when none is picked: what the Evaluate page reads."""
    from medclf_core.trust.sites import site_card

    if not picked_site():
        return card
    try:
        return site_card(card, picked_site_record(card))
    except MedclfError as exc:
        st.warning(md_escape(f"{user_message(exc)} The model card's calibration is used."))
        return card


def picked_site() -> str | None:
    """The site calibration picked in the sidebar for the current model, or None (the card's)."""
    return st.session_state.get("site_name")


def picked_site_record(card: dict) -> dict | None:
    """The record of the site picked for ``card``'s run (None: none picked), read once per version of its file
    (mtime, size, inode: a site saved again is read again), so the card in use (:func:`card_in_use`) and the
    predictor (``app_ui.load_predictor``) share one read. Unknown or damaged: ``load_site``'s MedclfError."""
    from medclf_core.trust.sites import site_path

    if not (site := picked_site()):
        return None
    try:
        stat = site_path(card["run_dir"], site).stat()
        version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    except OSError:
        version = None  # load_site says what is missing
    return _site_record(card["run_dir"], site, card.get("name"), version)


@st.cache_data(max_entries=32, show_spinner=False)
def _site_record(run_dir: str, site: str, model: str | None, version) -> dict:
    from medclf_core.trust.sites import load_site

    return load_site(run_dir, site, model=model)


def calibration_caption(predictor) -> None:
    """One caption line: which calibration the predictor's results use (the site's or the card's)."""
    from medclf_core.trust.sites import calibration_caption as caption

    text = caption(predictor.card, predictor.site)
    if text:
        st.caption(md_escape(text))


def adopt_site_panel(card, predictions: dict, load_predictor, source: str = "upload") -> None:
    """The Evaluate page's "adopt as this site's calibration", after an evaluation of a site's labelled images (an
    upload, a folder on the server or studies from a PACS; ``source`` names them in the record):
    fit a site's temperature (and threshold) on these predictions with the same core call as ``medclf
    recalibrate`` (:func:`medclf_core.inference.sites.adopt_site`), show before (card) and after (site,
    cross-fitted on held-back halves), and save it beside the model only when asked. ``load_predictor(card)``
    gives the predictor the predictions were made with (the page's ``app_ui.load_predictor`` with the site)."""
    from medclf_core.data.fingerprint import dataset_fingerprint
    from medclf_core.inference.sites import adopt_site
    from medclf_core.trust.site_checks import needs_confirmation
    from medclf_core.trust.sites import metric_texts, save_site

    saved = st.session_state.pop("_adopt_site_saved", None)  # said after the rerun that shows it in the sidebar
    # the key keeps the panel's identity across reruns: without it, typing the site's name collapsed it
    with st.expander("Adopt as this site's calibration", key="adopt_site_panel", expanded=bool(saved)):
        if saved:
            st.success(md_escape(saved))
        st.caption("Fits a temperature (never sharper than the model's own) and, for a two-class model, the threshold "
                   "that keeps sensitivity at the target on these images; checks both on held-back halves; saves it "
                   "beside the model (the weights and the card are not changed). The sidebar then offers it.")
        c1, c2 = st.columns([3, 2])
        name = c1.text_input("Site name", key="adopt_site_name", placeholder="e.g. st-marys")
        target = c2.number_input("Target sensitivity", 0.5, 0.999, 0.95, 0.01, key="adopt_site_target",
                                 disabled=len(card.class_names) != 2)
        key = (card["run_dir"], predictions["dataset"], len(predictions["y_true"]), name.strip(), float(target))
        if st.button("Fit and check", key="adopt_site_fit", disabled=not name.strip()):
            try:
                predictor = load_predictor(card)  # the calibration the predictions were made with
                fp = dataset_fingerprint(predictions["dataset"], split=predictions["split"])
                st.session_state["_adopt_site"] = (key, adopt_site(
                    predictor, predictions, name.strip(), dataset=source, fingerprint=fp,
                    target_sensitivity=float(target), save=False))
            except MedclfError as exc:
                st.error(md_escape(user_message(exc)))
        kept, rec = st.session_state.get("_adopt_site") or (None, None)
        if kept != key:
            return
        for w in rec.get("warnings") or []:  # before the figures and the Save button
            st.warning(md_escape(w["text"]))
        for label, block in (("Before (card calibration)", rec["before"]),
                             ("After (site, cross-fitted)", rec["after"])):
            st.text(f"{label}: " + "; ".join(metric_texts(block)))
        confirmed = not needs_confirmation(rec.get("warnings")) or st.checkbox(
            "Save anyway (I have read the warnings above)", key="adopt_site_force",
            help="The model card's calibration stays in use unless this site is picked in the sidebar.")
        if st.button(f"Save as site '{rec['site']}'", type="primary", key="adopt_site_save", disabled=not confirmed):
            try:
                st.session_state["_adopt_site_saved"] = f"Saved {save_site(card['run_dir'], rec)}; pick it in the " \
                    "sidebar's Calibration list."
            except MedclfError as exc:
                st.error(md_escape(user_message(exc)))
            else:
                st.rerun()  # the sidebar, drawn before this page, lists the new site only on the next run
