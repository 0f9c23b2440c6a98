"""Streamlit helpers shared by streamlit_app.py and the pages: the model picker, cached models, notices.

UI only: everything that computes is in medclf_core.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import streamlit as st

from medclf_core.errors import MedclfError, user_message
from medclf_core.registry.store import MODEL_FILE, default_models_dir, scan_registry
from medclf_core.server import memory, streamlit_compat

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


# Characters that make Markdown anywhere in a line: links and images, HTML, code, emphasis, tables, strikethrough,
# math, Streamlit's :color[...] directives, entities, and e-mail autolinks.
_MD_ANYWHERE = re.compile(r"([\\`*{}\[\]()!|<>~$&@])")
# https://... autolinks, :material/icons: and :emoji: shortcodes; a colon before a space or a digit is text
_MD_COLON = re.compile(r":(?=/|[A-Za-z_+-]+[:/])")
# An underscore is emphasis only at a word's edge (CommonMark): snake_case file names stay as they are.
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# Headings, lists, quotes and rules only at the start of a line.
_MD_LINE_START = re.compile(r"(?m)^([ \t]*)(\d*)([#+\-=.)])")
_MD_WWW = re.compile(r"(?i)\b(www)\.")  # GFM links a bare www.example.com


def md_escape(text) -> str:
    """``text`` shown as itself through st.markdown/caption/subheader/...: every character that would make
    Markdown there is backslash-escaped (a file named ``![p](https:x)`` is no image, ``**a**`` no bold), while
    harmless punctuation such as the ``-``, ``.`` and ``_`` of ``normal_IM-0411-0001.jpeg`` is left as it is."""
    out = _MD_ANYWHERE.sub(r"\\\1", str(text))
    out = _MD_COLON.sub(r"\\:", out)
    out = _MD_UNDERSCORE.sub(r"\\_", out)
    out = _MD_LINE_START.sub(lambda m: m.group(1) + m.group(2) + "\\" + m.group(3), out)
    return _MD_WWW.sub(r"\1\\.", out)


def default_model_name(all_runs: list[dict]) -> str | None:
    names = [r["name"] for r in all_runs]
    wanted = os.environ.get(DEFAULT_MODEL_ENV)
    if wanted in names:
        return wanted
    if PREFERRED_DEFAULT in names:
        return PREFERRED_DEFAULT
    return names[0] if names else None


def research_notice() -> None:
    st.caption(f":warning: **{NOTICE}**")


def sidebar_model_picker() -> str | None:
    """The shared model picker (drawn by streamlit_app.py on every page); the choice lives in session_state."""
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
        if st.session_state.get("model_name") not in names:
            st.session_state["model_name"] = default_model_name(all_runs)
        st.selectbox("Model", names, key="model_name",
                     format_func=lambda n: f"{n}  ·  {by_name[n].get('task', '')}",
                     help="The model used by the Predict and Evaluate pages.")
        card = by_name[st.session_state["model_name"]]
        st.caption(md_escape(f"{card.architecture or '?'} · classes: {', '.join(card.class_names)}"))
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
    for name in (MODEL_FILE, "card.json", "ood.npz"):
        try:
            stamps.append(str((Path(run_dir) / name).stat().st_mtime_ns))
        except OSError:
            stamps.append("missing")
    return "-".join(stamps)


@st.cache_resource(show_spinner="Loading the model and preparing it for the first image (once per server "
                                "start; the page above can already be used) ...", max_entries=6)
def _load(run_dir: str, stamp: str):
    """One model per process, shared read-only by every session. The lock serialises model calls.

    The warm-up (one dummy prediction, heat map and faithfulness check) traces the model's
    graphs here, under the loading message, instead of during the first real upload."""
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(run_dir)
    predictor.warm_up()
    memory.freeze_long_lived()  # Streamlit's collection after each run then skips the model and the libraries
    return predictor, threading.Lock()


def load_predictor(card: dict):
    """(Predictor, lock) for a card; shows a plain message and stops the page if it cannot load."""
    try:
        return _load(card["run_dir"], _stamp(card["run_dir"]))
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
