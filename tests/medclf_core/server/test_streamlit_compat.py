"""medclf_core.server.streamlit_compat against the installed Streamlit: each private API it patches or calls
is still there with the expected signature (these fail when an upgrade removes one), each patch does what it
says, and each warns when it cannot be applied."""

from __future__ import annotations

import inspect
import logging
import sys
import types

import pytest

from medclf_core import errors
from medclf_core.server import streamlit_compat


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(errors, "_missing_apis_reported", set())


def test_streamlit_still_clears_keras_after_each_run_through_the_patched_function(monkeypatch):
    """The upstream behaviour keep_keras_between_runs works around: the script runner calls
    ``_clean_problem_modules`` after a run, and that calls ``keras.backend.clear_session``."""
    from streamlit.runtime.scriptrunner import script_runner

    assert "_clean_problem_modules" in inspect.getsource(script_runner.ScriptRunner)
    original = script_runner._clean_problem_modules
    original = getattr(original, "replaces", original)  # Streamlit's own, also when patched earlier
    assert list(inspect.signature(original).parameters) == []
    cleared = []
    fake_keras = types.SimpleNamespace(backend=types.SimpleNamespace(clear_session=lambda: cleared.append(1)))
    monkeypatch.setitem(sys.modules, "keras", fake_keras)
    original()
    assert cleared == [1]


def test_keep_keras_between_runs_keeps_keras_and_closes_figures(monkeypatch):
    from streamlit.runtime.scriptrunner import script_runner

    monkeypatch.setattr(script_runner, "_clean_problem_modules", script_runner._clean_problem_modules)
    assert streamlit_compat.keep_keras_between_runs() is True
    assert streamlit_compat.keep_keras_between_runs() is True  # once: the patch is not wrapped again
    cleared, closed = [], []
    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(
        backend=types.SimpleNamespace(clear_session=lambda: cleared.append(1))))
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", types.SimpleNamespace(close=closed.append))
    script_runner._clean_problem_modules()
    assert cleared == [] and closed == ["all"]


def test_keep_keras_between_runs_warns_when_the_private_function_is_gone(monkeypatch, caplog, fresh_warnings):
    from streamlit.runtime.scriptrunner import script_runner

    monkeypatch.delattr(script_runner, "_clean_problem_modules")
    with caplog.at_level(logging.WARNING, logger=streamlit_compat.__name__):
        assert streamlit_compat.keep_keras_between_runs() is False
        assert streamlit_compat.keep_keras_between_runs() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "_clean_problem_modules" in warnings[0].getMessage()  # once per process


def test_the_runtime_can_still_mark_a_session_not_resumable():
    """The private API end_session_when_tab_closes calls, on the real Runtime class and its session manager."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.runtime.session_manager import SessionManager

    assert list(inspect.signature(Runtime.mark_session_nonresumable).parameters) == ["self", "session_id"]
    assert callable(Runtime.exists) and callable(Runtime.instance) and callable(get_script_run_ctx)
    assert "mark_session_nonresumable" in dir(SessionManager)


class _Ctx:
    session_id = "session-1"


def _runtime_with(monkeypatch, instance) -> None:
    from streamlit.runtime import Runtime
    from streamlit.runtime import scriptrunner

    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda *a, **k: _Ctx())
    monkeypatch.setattr(Runtime, "exists", classmethod(lambda cls: True))
    monkeypatch.setattr(Runtime, "instance", classmethod(lambda cls: instance))


def test_end_session_when_tab_closes_marks_the_running_session(monkeypatch):
    """A runtime built from the real class (its methods, not its start-up): the real method is called."""
    from unittest import mock

    from streamlit.runtime import Runtime

    runtime = mock.create_autospec(Runtime, instance=True)
    _runtime_with(monkeypatch, runtime)
    assert streamlit_compat.end_session_when_tab_closes() is True
    runtime.mark_session_nonresumable.assert_called_once_with("session-1")


def test_end_session_when_tab_closes_warns_when_the_method_is_gone(monkeypatch, caplog, fresh_warnings):
    _runtime_with(monkeypatch, types.SimpleNamespace())
    with caplog.at_level(logging.WARNING, logger=streamlit_compat.__name__):
        assert streamlit_compat.end_session_when_tab_closes() is False
    assert any("mark_session_nonresumable" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_end_session_when_tab_closes_does_nothing_outside_a_script_run(caplog):
    with caplog.at_level(logging.WARNING, logger=streamlit_compat.__name__):
        assert streamlit_compat.end_session_when_tab_closes() is False
    assert not [r for r in caplog.records if r.name == streamlit_compat.__name__]
