"""Streamlit helpers shared by app.py and the pages: the model picker, cached models, notices.

UI only: everything that computes is in medclf_core.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import streamlit as st

from medclf_core.errors import MedclfError
from medclf_core.registry import MODEL_FILE, default_models_dir, list_runs

REPO = Path(__file__).resolve().parent
SAMPLES = REPO / "samples"
DEFAULT_MODEL_ENV = "MEDCLF_DEFAULT_MODEL"
PREFERRED_DEFAULT = "chest-xray-pneumonia"
NOTICE = "Research demo, not for clinical use. The models are not medical devices; do not use them to diagnose."


def models_dir() -> Path:
    return default_models_dir()


def runs() -> list[dict]:
    """Every registered run (newest first); never raises."""
    try:
        return list_runs(models_dir())
    except OSError:
        return []


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
    all_runs = runs()
    with st.sidebar:
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
        st.caption(f"{card.get('architecture')} · classes: {', '.join(card.get('class_names') or [])}")
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
    try:
        return str((Path(run_dir) / MODEL_FILE).stat().st_mtime_ns)
    except OSError:
        return "missing"


@st.cache_resource(show_spinner="Loading the model ...", max_entries=6)
def _load(run_dir: str, stamp: str):
    """One model per process, shared read-only by every session. The lock serialises model calls."""
    from medclf_core.inference import Predictor

    return Predictor.from_run(run_dir), threading.Lock()


def load_predictor(card: dict):
    """(Predictor, lock) for a card; shows a plain message and stops the page if it cannot load."""
    try:
        return _load(card["run_dir"], _stamp(card["run_dir"]))
    except MedclfError as exc:
        st.error(f"The model '{card.get('name')}' cannot be loaded: {exc}")
        st.stop()
    except Exception as exc:  # noqa: BLE001 - never a traceback in the UI
        st.error(f"The model '{card.get('name')}' cannot be loaded ({type(exc).__name__}: {exc}).")
        st.stop()


def forget_models() -> None:
    _load.clear()


def fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3f}"
