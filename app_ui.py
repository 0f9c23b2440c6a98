"""Streamlit helpers shared by app.py and the pages: the model picker, cached models, notices.

UI only: everything that computes is in medclf_core.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

import streamlit as st

from medclf_core.errors import MedclfError, user_message
from medclf_core.registry.store import MODEL_FILE, default_models_dir, scan_registry

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
    """The shared model picker (drawn by app.py on every page); the choice lives in session_state."""
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
    from medclf_core.server.memory import freeze_long_lived

    predictor = Predictor.from_run(run_dir)
    predictor.warm_up()
    freeze_long_lived()  # Streamlit's collection after each run then skips the model and the libraries
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


def fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def _secrets() -> dict:
    """Streamlit's secrets (``.streamlit/secrets.toml``), or nothing when there is no secrets file."""
    try:
        return dict(st.secrets)
    except Exception:  # noqa: BLE001 - no secrets file, or one that does not parse: the environment decides
        return {}


def start_page() -> None:
    """First call of app.py and of every page: the models' compiled state kept between runs, memory released
    when the session ends, then the password."""
    keep_compiled_models()
    release_on_disconnect()
    password_gate()


def keep_compiled_models() -> None:
    """Stop Streamlit from clearing Keras after every script run (once per process).

    After each run Streamlit calls ``keras.backend.clear_session()`` (``_clean_problem_modules`` in
    ``streamlit.runtime.scriptrunner.script_runner``), which empties TensorFlow's kernel cache and runs a
    full garbage collection. The models here live on in ``st.cache_resource``, so the next run then
    re-optimises every graph it calls: 0.3 s for the forward pass and again for the heat map on 2 CPU
    cores, more for an ensemble (``bench/app_latency.py``). The app never builds models in its own process
    (training runs in a subprocess), so there is nothing for that clear to free. Streamlit's other
    clean-up, closing matplotlib figures, is kept. This replaces a private Streamlit function: where it is
    missing (another Streamlit version) nothing is changed.
    """
    from streamlit.runtime.scriptrunner import script_runner

    original = getattr(script_runner, "_clean_problem_modules", None)
    if original is None or getattr(original, "keeps_keras", False):
        return

    def clean_problem_modules_but_keras() -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            try:
                plt.close("all")
            except Exception:  # noqa: BLE001, S110 - as Streamlit does: a clean-up never fails a run
                pass

    clean_problem_modules_but_keras.keeps_keras = True
    script_runner._clean_problem_modules = clean_problem_modules_but_keras


def release_on_disconnect() -> None:
    """Mark this browser session as not resumable, so that when its tab closes Streamlit shuts it down at
    once and frees its state, uploads and images, instead of keeping them for a reconnect that a stored
    session never gets cleaned up after (medclf_core.server.memory); and start the process's malloc trimmer.
    A dropped connection then starts a new session (the uploads are asked for again)."""
    if st.session_state.get("_medclf_release"):
        return
    from medclf_core.server import memory

    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is not None and Runtime.exists():
            Runtime.instance().mark_session_nonresumable(ctx.session_id)
    except Exception:  # noqa: BLE001 - an older or test runtime: the session is kept as Streamlit decides
        pass
    memory.start_trimmer()
    st.session_state["_medclf_release"] = True


def password_gate() -> None:
    """Ask for the access password before anything else (medclf_core.server.access); nothing when none is set.

    Called (through :func:`start_page`) by app.py and at the top of every page, so no way to a page
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
