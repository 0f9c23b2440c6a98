"""Patches over private Streamlit APIs that the app relies on (written against Streamlit 1.67).

Each function names the Streamlit behaviour it works around. Where the private API it needs is gone
(another Streamlit version) it changes nothing and logs a WARNING once per process: the app still
works, only slower (:func:`keep_keras_between_runs`) or holding more memory
(:func:`end_session_when_tab_closes`). ``tests/medclf_core/server/test_streamlit_compat.py`` checks
each private API against the installed Streamlit, so an upgrade that removes or changes one fails
there: then update or delete the patch.

Streamlit is imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import logging
import sys

from medclf_core.errors import private_attribute, warn_missing_api

log = logging.getLogger(__name__)


def _warn_once(what: str, consequence: str) -> None:
    warn_missing_api(log, "Streamlit", what, consequence)



def keep_keras_between_runs() -> bool:
    """Stop Streamlit from clearing Keras after every script run (once per process). Returns whether the
    patch is in place.

    Works around Streamlit 1.67 ``streamlit.runtime.scriptrunner.script_runner._clean_problem_modules``,
    which the script runner calls after each run: it calls ``keras.backend.clear_session()``, which empties
    TensorFlow's kernel cache and runs a full garbage collection. The models live on in
    ``st.cache_resource``, so the next run re-optimised every graph it called: 0.3 s for the forward pass
    and again for the heat map on 2 CPU cores, more for an ensemble (``bench/app_latency.py``). The app
    never builds models in its own process (training runs in a subprocess), so that clear frees nothing.
    Streamlit's other clean-up, closing matplotlib figures, is kept.
    """
    original = private_attribute(log, "Streamlit", "streamlit.runtime.scriptrunner.script_runner",
                                 "_clean_problem_modules", "Keras is cleared after every run (slower)")
    if original is None:
        return False
    if getattr(original, "keeps_keras", False):
        return True
    from streamlit.runtime.scriptrunner import script_runner  # importable: private_attribute found it there

    def clean_problem_modules_but_keras() -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            try:
                plt.close("all")
            except Exception:  # noqa: BLE001, S110 - as Streamlit does: a clean-up never fails a run
                pass

    clean_problem_modules_but_keras.keeps_keras = True
    clean_problem_modules_but_keras.replaces = original  # Streamlit's own, for the test of what it does
    script_runner._clean_problem_modules = clean_problem_modules_but_keras
    return True


def end_session_when_tab_closes() -> bool:
    """Mark the running script's browser session as not resumable; returns whether it was marked.

    Works around Streamlit 1.67 keeping a disconnected session for a reconnect: a stored session that
    expires is dropped without being shut down, so its state, uploads and images stay in memory
    (``bench/session_memory.py``). ``Runtime.instance().mark_session_nonresumable(session_id)`` makes a
    closed tab end its session at once; a dropped connection then starts a new session. False, with
    nothing changed, outside a script run or without a Streamlit runtime (bare mode).
    """
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        _warn_once("streamlit.runtime.Runtime", "closed tabs keep their memory until the session expires")
        return False
    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return False
    mark = getattr(Runtime.instance(), "mark_session_nonresumable", None)
    if mark is None:
        _warn_once("Runtime.mark_session_nonresumable", "closed tabs keep their memory until the session expires")
        return False
    mark(ctx.session_id)
    return True


def navigation_from_the_first_visit() -> bool:
    """Tell Streamlit, before any browser connects, that the app's navigation is ``st.navigation`` (in
    streamlit_app.py), not the ``pages/`` folder; returns whether that is set.

    Works around Streamlit 1.67's ``PagesManager.uses_pages_directory``: the first session of a process sees
    a ``pages/`` folder beside the main script and runs in the old folder mode (``script_runner._mpa_v1``):
    the requested page alone (a bookmark to /predict), under Streamlit's own page list with the main script
    as an entry "app", without the session script's navigation, model picker and notice. Only a call of
    ``st.navigation`` turns that mode off, and that call is in the very script this mode skips. Setting
    the flag to False here is what that first ``st.navigation`` call does.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        _warn_once("streamlit.runtime.pages_manager.PagesManager", "a page opened first may miss the navigation")
        return False
    if not hasattr(PagesManager, "uses_pages_directory"):
        return True  # no pages/-folder mode in this Streamlit: st.navigation is all there is
    PagesManager.uses_pages_directory = False
    return True
