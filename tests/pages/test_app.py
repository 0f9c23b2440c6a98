"""app.py (the server: the default model warmed as it starts) and streamlit_app.py (navigation over every page,
the shared model picker, the notice, and no models at all)."""

from __future__ import annotations

from helpers import REPO

PAGES = ["pages/predict.py", "pages/train.py", "pages/evaluate.py", "pages/models.py"]


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=180)


def test_every_page_renders_with_picker_and_notice(own_models):
    at = _app()
    at.run()
    assert not at.exception
    assert any("not for clinical use" in c.value for c in at.caption)
    picker = at.sidebar.selectbox(key="model_name")
    assert picker.value == "tiny-b" or picker.value == "tiny-a"
    picker.set_value("tiny-a")
    for path, title in zip(PAGES, ["Predict", "Train", "Evaluate", "Models"], strict=True):
        at.switch_page(path)
        at.run()
        assert not at.exception, path
        assert at.title[0].value == title
        # AppTest's switch_page runs the page without app.py's sidebar; the browser test checks the picker there.


def test_default_model_from_env(own_models, monkeypatch):
    monkeypatch.setenv("MEDCLF_DEFAULT_MODEL", "tiny-b")
    at = _app()
    at.run()
    assert at.sidebar.selectbox(key="model_name").value == "tiny-b"


def test_no_models_is_a_friendly_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    at = _app()
    for path in PAGES:
        at.switch_page(path)
        at.run()
        assert not at.exception, path
    at.switch_page(PAGES[0])
    at.run()
    assert any("No model" in i.value for i in at.info)


def test_a_bad_card_never_breaks_the_app(own_models):
    import shutil

    for folder, text in {"broken-list": "[]", "broken-threshold": '{"name": "broken-threshold", '
                                                                   '"class_names": ["a", "b"], "threshold": "0.5"}',
                         "broken-classes": '{"name": "broken-classes", "class_names": [0, 1]}'}.items():
        shutil.copytree(own_models / "tiny-a", own_models / folder)
        (own_models / folder / "card.json").write_text(text)
    at = _app()
    at.run()
    assert not at.exception
    picker = at.sidebar.selectbox(key="model_name")
    assert sorted(o.split()[0] for o in picker.options) == ["tiny-a", "tiny-b"]
    assert any("3 model folder(s) cannot be used" in w.value for w in at.sidebar.warning)
    for path in PAGES:
        at.switch_page(path)
        at.run()
        assert not at.exception, path


def test_streamlit_run_app_py_serves_the_session_script_and_warms_the_default_model_first(app_env, monkeypatch,
                                                                                          page):
    """`streamlit run app.py` finds app.py's st.App (Streamlit's own discovery) serving streamlit_app.py; its
    lifespan, run as the server starts, loads and warms the default model into the pages' cache in a
    background thread, so the Predict page, run afterwards, loads nothing itself."""
    import asyncio
    import importlib.util
    import threading

    import streamlit as st
    from streamlit.web.server.app_discovery import discover_asgi_app

    import app_ui
    from medclf_core.inference.predictor import Predictor

    assert discover_asgi_app(REPO / "app.py").is_asgi_app
    built = {}
    monkeypatch.setattr(st, "App", lambda script, **kw: built.update(script=script, **kw) or "the app")
    spec = importlib.util.spec_from_file_location("medclf_server_under_test", REPO / "app.py")
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    assert server.app == "the app" and built["script"] == REPO / "streamlit_app.py"

    loads, warm_ups = [], []
    from medclf_core.inference import warmup

    from_run, warm_up_steps = Predictor.from_run.__func__, warmup.warm_up_steps
    monkeypatch.setattr(Predictor, "from_run", classmethod(
        lambda cls, *a, **k: (loads.append(threading.current_thread().name), from_run(cls, *a, **k))[1]))
    monkeypatch.setattr(warmup, "warm_up_steps", lambda p, *a, **k: (warm_ups.append(1), warm_up_steps(p, *a, **k))[1])
    monkeypatch.setattr(app_ui, "_warming", None)
    app_ui.forget_models()

    async def serve_briefly():
        async with built["lifespan"]("the app"):
            pass

    asyncio.run(serve_briefly())
    assert app_ui._warming is not None, "the server's start did not start the warm-up"
    app_ui._warming.join(timeout=300)
    assert loads == ["medclf-warm-default-model"] and warm_ups == [1]  # loaded and warmed before any page ran
    at = page("predict")
    at.run()
    assert not at.exception
    assert loads == ["medclf-warm-default-model"]  # the page found the model in the cache
    assert warm_ups == [1]


# ---------------------------------------------------------------------------- issue 26

def test_a_reload_keeps_the_picked_model_and_a_vanished_one_is_said(own_models):
    """Issue 26: a reload (a new session) switched the model back to the default, silently. The pick is in the
    URL (?model=...), and a picked model that is gone is replaced with a warning that names it."""
    import shutil

    at = _app()
    at.run()
    default = at.sidebar.selectbox(key="model_name").value
    assert at.query_params["model"] == default
    other = "tiny-a" if default == "tiny-b" else "tiny-b"
    picked = _app()  # (AppTest draws streamlit_app.py's sidebar on a session's first run only: one run each)
    picked.session_state["model_name"] = other
    picked.run()
    assert picked.query_params["model"] == other  # in the URL: what a reload or a bookmark sends back
    reloaded = _app()
    reloaded.query_params["model"] = other
    reloaded.run()
    assert not reloaded.exception
    assert reloaded.sidebar.selectbox(key="model_name").value == other
    assert not reloaded.sidebar.warning
    # the picked model deleted meanwhile: the default, and a warning that says so
    shutil.rmtree(own_models / other)
    gone = _app()
    gone.query_params["model"] = other
    gone.run()
    assert not gone.exception
    assert gone.sidebar.selectbox(key="model_name").value == default
    notes = [w.value for w in gone.sidebar.warning]
    assert len(notes) == 1 and other in notes[0] and "not available any more" in notes[0]
    assert gone.query_params["model"] == default
