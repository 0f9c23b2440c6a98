"""Streamlit helpers shared by streamlit_app.py and the pages: the model picker, cached models, notices.

UI only: everything that computes is in medclf_core.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import streamlit as st

from medclf_core.errors import MedclfError, user_message
from medclf_core.registry.store import MODEL_FILE, default_models_dir, scan_registry
from medclf_core.inference import warmup
from medclf_core.server import memory, streamlit_compat
from medclf_core.server.text import md_escape, md_escape_frame
from site_ui import picked_site, picked_site_record, sidebar_site_picker

REPO = Path(__file__).resolve().parent
SAMPLES = REPO / "samples"
DEFAULT_MODEL_ENV = "MEDCLF_DEFAULT_MODEL"
PREFERRED_DEFAULT = "chest-xray-pneumonia"
NOTICE = "Research demo, not for clinical use. The models are not medical devices; do not use them to diagnose."


def models_dir() -> Path:
    return default_models_dir()


def registry() -> tuple[list, list[dict]]:
    """``(runs, unreadable)``: the usable runs (validated cards, newest first) and the run folders that
    cannot be used, each with its ``reason``. Never raises: one bad card never takes the app down."""
    try:
        return scan_registry(models_dir())
    except Exception:  # noqa: BLE001 - the picker is on every page; it must always draw
        return [], []


def runs() -> list:
    """Every usable registered run (newest first); never raises."""
    return registry()[0]


def unreadable_runs() -> list[dict]:
    """Run folders whose card is damaged or not valid (``name``, ``run_dir``, ``reason``); never raises."""
    return registry()[1]


def default_model_name(all_runs: list[dict]) -> str | None:
    names = [r["name"] for r in all_runs]
    wanted = os.environ.get(DEFAULT_MODEL_ENV)
    if wanted in names:
        return wanted
    if PREFERRED_DEFAULT in names:
        return PREFERRED_DEFAULT
    return names[0] if names else None


def table(frame) -> None:
    """``st.table`` of a DataFrame whose cells may hold user text (its cells and headers are Markdown)."""
    st.table(md_escape_frame(frame))


def research_notice() -> None:
    st.caption(f":warning: **{NOTICE}**")


MODEL_QUERY_PARAM = "model"  # the picked model in the page's URL: kept across a reload, a bookmark, a shared link


def _picked_model(names: list[str], all_runs: list) -> tuple[str, str | None]:
    """The model to show in the picker, and a note when it is not the one the user picked.

    The session's pick first; a new session (a reload) takes the URL's ``?model=``; the default only when
    neither names one. A pick that is no longer there (deleted, or its card damaged) is replaced by the
    default with a note that says so, never silently."""
    chosen = st.session_state.get("model_name")
    if chosen is None:
        chosen = st.query_params.get(MODEL_QUERY_PARAM)
    if chosen in names:
        return chosen, None
    default = default_model_name(all_runs)
    if chosen is None:
        return default, None
    return default, (f"The model '{chosen}' you picked is not available any more (deleted, or its card cannot be "
                     f"read): now using '{default}'. Pick another one below if that is not what you want.")


def sidebar_model_picker() -> str | None:
    """The shared model picker (drawn by streamlit_app.py on every page); the choice lives in session_state
    and in the URL (``?model=``), so a reload or a bookmark keeps it."""
    all_runs, unreadable = registry()
    with st.sidebar:
        if unreadable:
            st.warning(f"{len(unreadable)} model folder(s) cannot be used (a damaged or invalid model card); "
                       "the **Models** page lists them with the reason.")
        if not all_runs:
            st.info("No models are registered yet. Train one on the **Train** page.")
            return None
        names = [r["name"] for r in all_runs]
        by_name = {r["name"]: r for r in all_runs}
        picked, note = _picked_model(names, all_runs)
        if st.session_state.get("model_name") != picked:
            st.session_state["model_name"] = picked
        if note:
            st.session_state["_model_note"] = note  # shown until the user picks a model
        if st.session_state.get("_model_note"):
            st.warning(md_escape(st.session_state["_model_note"]))
        st.selectbox("Model", names, key="model_name", on_change=lambda: st.session_state.pop("_model_note", None),
                     help="The model used by the Predict and Evaluate pages.")  # the name alone: the task is below
        card = by_name[st.session_state["model_name"]]
        if st.query_params.get(MODEL_QUERY_PARAM) != card["name"]:
            st.query_params[MODEL_QUERY_PARAM] = card["name"]
        st.caption(md_escape(f"{card.get('task') or ''} · {card.architecture or '?'} · classes: "
                             f"{card.classes_text}").lstrip(" ·"))
        sidebar_site_picker(card)
        st.divider()
        st.caption(NOTICE)
    return st.session_state["model_name"]


def current_card() -> dict | None:
    """The card of the model chosen in the picker (or the default one)."""
    all_runs = runs()
    by_name = {r["name"]: r for r in all_runs}
    name = st.session_state.get("model_name")
    if name in by_name:
        return by_name[name]
    default = default_model_name(all_runs)
    return by_name.get(default) if default else None


def require_card() -> dict:
    card = current_card()
    if card is None:
        st.info("No model is available yet. Train one on the **Train** page (the bundled sample trains in about "
                "a minute), or put model runs in the models folder "
                f"(`{models_dir()}`).")
        st.stop()
    return card


def _stamp(run_dir: str) -> str:
    """Changes whenever what the Predictor loads changes: the model, its card (calibration) or its gate."""
    stamps = []
    for name in (MODEL_FILE, "card.json", "ood.npz", "model.tflite.json"):  # the last: the LiteRT fast path's
        try:
            stamps.append(str((Path(run_dir) / name).stat().st_mtime_ns))
        except OSError:
            stamps.append("missing")
    return "-".join(stamps)


@st.cache_resource(show_spinner="Loading the model and preparing it for the first image (once per server "
                                "start; the page above can already be used) ...", max_entries=6)
def _load(run_dir: str, stamp: str):
    """One model per process, shared read-only by every session. The lock serialises model calls.

    The warm-up traces the model's graphs here, under the loading message, instead of during the first
    real upload: the prediction and the Grad-CAM map before this returns, the faithfulness check and the
    other methods in the background afterwards (:func:`medclf_core.inference.warmup.warm_in_steps`)."""
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(run_dir)
    lock = warmup.ModelLock()
    # ready once the prediction and the first map are traced; the rest is warmed between real images
    rest = warmup.warm_in_steps(predictor, lock, ready_after="gradcam", when_done=memory.freeze_long_lived)
    if rest is not None:  # else nothing was left (a LiteRT model) and when_done has just run
        memory.freeze_long_lived()  # Streamlit's collection after each run then skips the model and the libraries
    return predictor, lock


def load_predictor(card: dict, site: bool = False):
    """(Predictor, lock) for a card; shows a plain message and stops the page if it cannot load. ``site``:
    with the calibration picked in the sidebar (:func:`picked_site`; the same loaded model, no reload)."""
    try:
        predictor, lock = _load(card["run_dir"], _stamp(card["run_dir"]))
        lock.touch()  # a page run that may use the model: the background warm-up waits for it
        if site and picked_site():
            from medclf_core.inference.sites import with_site

            predictor = with_site(predictor, picked_site(), picked_site_record(card))
        return predictor, lock
    except MedclfError as exc:
        st.error(md_escape(f"The model '{card.get('name')}' cannot be loaded: {user_message(exc)}"))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - never a traceback or a third-party message in the UI
        st.error(md_escape(user_message(exc, f"The model '{card.get('name')}' cannot be loaded")))
        st.stop()


def forget_models() -> None:
    _load.clear()


_warming: threading.Thread | None = None
_warming_lock = threading.Lock()


def start_warming_default_model() -> threading.Thread:
    """Load and warm the default model (:func:`default_model_name`) in a background thread, once per process,
    through the pages' own cache (:func:`load_predictor`'s key): app.py calls it as the server starts, so the
    first page view finds the model loaded or loading (a page that asks meanwhile waits for the same load)."""
    global _warming
    with _warming_lock:
        if _warming is None:
            _warming = threading.Thread(target=_warm_default_model, name="medclf-warm-default-model", daemon=True)
            _warming.start()
    return _warming


def _warm_default_model() -> None:
    all_runs = runs()
    name = default_model_name(all_runs)
    card = next((r for r in all_runs if r["name"] == name), None)
    if card is None:
        return
    try:
        _load(card["run_dir"], _stamp(card["run_dir"]))
    except Exception:  # noqa: BLE001 - the page that needs the model shows why it cannot load
        logging.getLogger(__name__).warning("The default model %s could not be warmed up", name, exc_info=True)


def _secrets() -> dict:
    """Streamlit's secrets (``.streamlit/secrets.toml``), or nothing when there is no secrets file."""
    try:
        return dict(st.secrets)
    except Exception:  # noqa: BLE001 - no secrets file, or one that does not parse: the environment decides
        return {}


def start_page() -> None:
    """First call of streamlit_app.py and of every page: the models' compiled state kept between runs,
    memory released when the session ends, then the password."""
    streamlit_compat.keep_keras_between_runs()
    release_on_disconnect()
    password_gate()


def release_on_disconnect() -> None:
    """Once per browser session: end the session as soon as its tab closes, so Streamlit frees its state,
    uploads and images (:func:`medclf_core.server.streamlit_compat.end_session_when_tab_closes`), and start
    the process's malloc trimmer (:mod:`medclf_core.server.memory`)."""
    if st.session_state.get("_medclf_release"):
        return
    streamlit_compat.end_session_when_tab_closes()
    memory.start_trimmer()
    st.session_state["_medclf_release"] = True


def password_gate() -> None:
    """Ask for the access password before anything else (medclf_core.server.access); nothing when none is set.

    Called (through :func:`start_page`) by streamlit_app.py and at the top of every page, so no way to a page
    skips it. The session stays unlocked until the password is changed on the server.
    """
    from medclf_core.server.access import configured_password, password_matches

    expected = configured_password(_secrets())
    if expected is None:
        return
    import hashlib

    stamp = hashlib.sha256(expected.encode("utf-8")).hexdigest()
    if st.session_state.get("_medclf_unlocked") == stamp:
        return
    st.title("medclf")
    st.caption(NOTICE)
    with st.form("medclf_password_form", clear_on_submit=True):
        given = st.text_input("Access password", type="password", key="_medclf_password")
        submitted = st.form_submit_button("Open the app", type="primary")
    if submitted:
        if password_matches(given, expected):
            st.session_state["_medclf_unlocked"] = stamp
            st.rerun()
        st.error("That password is not right. Ask the person who runs this server for it.")
    st.stop()


def unfamiliar_caution(result: dict, card: dict) -> None:
    """The caution beside a finding on an image unlike the model's training images (the "unfamiliar source"
    tier): one line, quoting the recorded other-source evaluations' accuracy (the lowest and highest) when the run
    has any."""
    from medclf_core.registry.evaluations import list_evaluations
    from medclf_core.trust.verdict import unfamiliar_message

    if result.get("unfamiliar") is True:
        records = list_evaluations(card["run_dir"]) if card.get("run_dir") else []
        st.warning(md_escape(unfamiliar_message(result, records)))


def ood_panel(ob: dict | None, all_rows: list[dict]) -> None:
    """The Evaluate page's out-of-distribution check (:func:`medclf_core.trust.verdict.ood_block`): how many images
    were refused (coverage), how many got a caution, and the metrics over every image beside those without the
    refused ones (``all_rows``: :func:`medclf_core.reports.plots.metrics_table` of every image)."""
    import pandas as pd

    from medclf_core.formatting import percent
    from medclf_core.reports.plots import metrics_table

    if ob is None:
        st.info("The stored test-split predictions carry no out-of-distribution flags: evaluate the model on a "
                "dataset folder to see how many images its gate refuses.")
        return
    if not ob["checked"]:
        st.info("Not checked: this model has no out-of-distribution gate (ood.npz). "
                "`python -m medclf_core refit-trust` adds one.")
        return
    caution = "" if ob.get("n_unfamiliar") is None else \
        f" {ob['n_unfamiliar']} more {'was' if ob['n_unfamiliar'] == 1 else 'were'} answered with a caution (not " \
        "refused; listed below with why)."
    st.markdown(f"**{ob['n_flagged']} of {ob['n']} images refused** ({percent(ob['fraction_flagged'])}: not the kind "
                f"of image this model reads; coverage {percent(ob.get('coverage'))}).{caution} The metrics above are "
                "over every image, refused ones included.")
    rest = ob["metrics_without_flagged"]
    if rest is None:
        st.warning("Every image was refused: there are no metrics without them.")
        return
    if not ob["n_flagged"]:  # nothing refused: a second column would repeat the first
        return
    both = pd.DataFrame(all_rows).set_index("metric")
    wo = pd.DataFrame(metrics_table(rest)).set_index("metric")
    side = pd.DataFrame({"all images": both["value"], "all: 95% interval": both["95% interval"],
                         "without the refused": wo["value"].reindex(both.index),
                         "without: 95% interval": wo["95% interval"].reindex(both.index)})
    st.dataframe(side.reset_index(), hide_index=True, width="stretch", key="ood-metrics")


def refused_and_cautioned(predictions: dict, mis: dict) -> None:
    """Under the Evaluate page's misclassified images: the refused images (no finding, with the reason) and the
    answered ones shown with a caution (right or wrong, with the reason), each listed apart
    (:mod:`medclf_core.reports.evaluation_text`)."""
    import pandas as pd

    from medclf_core.reports import evaluation_text

    if len(mis["refused"]):
        st.markdown("**Refused (no finding)**")
        st.caption(evaluation_text.refused_caption(mis))
        st.dataframe(pd.DataFrame(evaluation_text.refused_rows(predictions, mis)), hide_index=True, width="stretch",
                     key="eval-refused", column_config={"reason": st.column_config.TextColumn(width="large")})
    rows = evaluation_text.cautioned_rows(predictions, mis)
    if rows:
        st.markdown("**Answered with a caution**")
        st.caption(evaluation_text.cautioned_caption(predictions, mis))
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="eval-cautioned",
                     column_config={"reason": st.column_config.TextColumn(width="large")})  # the whole reason


def metrics_heading(m: dict, unit: str) -> None:
    """The Evaluate page's "Metrics" heading: what its intervals resample (``m["n_groups"]`` groups, in ``unit``
    words, else images), and the note when the patient pattern left file names without a patient."""
    groups = f", resampling {m['n_groups']} {unit}" if m.get("n_groups") else ""
    st.markdown(f"**Metrics** (95% bootstrap intervals{groups})")
    if m.get("group_note"):
        st.info(md_escape(m["group_note"]))


def deferral_panel(sel: dict, evaluation_id) -> None:
    """The Evaluate page's "Deferring to a reader": accuracy against coverage for the ordering picked
    (:func:`medclf_core.trust.selective.selective_prediction`'s ``sel``). The choice belongs to the evaluation shown
    (``evaluation_id``): a new one starts at the first ordering, in the browser and here alike (a choice kept from
    an earlier evaluation was drawn while the radio showed the first; walk-through, session 21)."""
    from medclf_core.reports import plots
    from medclf_core.trust.selective import ORDERINGS, deferral_caption

    if st.session_state.get("_eval_defer_for") != evaluation_id:
        st.session_state.pop("eval-defer", None)
        st.session_state["_eval_defer_for"] = evaluation_id
    order = st.radio("Defer first", [k for k, v in (sel.get("orderings") or {}).items() if v], horizontal=True,
                     key="eval-defer", format_func=lambda k: f"the {ORDERINGS[k]} images")
    if order:
        st.caption(deferral_caption(sel, order))
        st.plotly_chart(plots.risk_coverage_figure(sel, order), key="risk-coverage", config={"displayModeBar": False})
