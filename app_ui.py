"""Streamlit helpers shared by app.py and the pages: the model picker, cached models, notices.

UI only: everything that computes is in medclf_core.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import streamlit as st

from medclf_core.errors import MedclfError
from medclf_core.registry import MODEL_FILE, default_models_dir, scan_registry

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


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md_escape(text) -> str:
    """``text`` with every Markdown character escaped, for names and reasons shown through st.markdown/caption."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


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
