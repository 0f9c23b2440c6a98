"""Access on the pages: server paths only inside the data roots; the optional access password."""

from __future__ import annotations

import pytest

from helpers import REPO, rendered, server_folder

PAGES = ["predict", "train", "evaluate", "models"]


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=180)


def _texts(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "subheader")
             for e in getattr(at, kind)]
    return "\n".join(rendered(p) for p in parts)


@pytest.mark.parametrize("path", ["/etc", "/", "/proc/1/cwd"])
def test_train_refuses_a_folder_outside_the_data_roots_and_lists_nothing(app_env, page, path):
    at = server_folder(page, "train", path)
    assert not at.exception
    shown = rendered(at.error[0].value)
    assert shown.startswith(f"This dataset cannot be used: '{path}' was not found in the folders this app may read")
    assert "MEDCLF_DATA_ROOTS" in shown and "Permission" not in shown and "Errno" not in shown
    # no audit: no class folders, no counts, nothing read
    assert not at.metric and not at.dataframe
    assert "passwd" not in _texts(at) and "Images per class" not in _texts(at)


def test_evaluate_refuses_a_folder_outside_the_data_roots(app_env, page):
    at = server_folder(page, "evaluate", "/etc")
    assert not at.exception
    shown = rendered(at.error[0].value)
    assert shown.startswith("This dataset cannot be evaluated: '/etc' was not found in the folders this app may "
                            "read")
    assert not at.dataframe and not at.get("plotly_chart")
    assert not any("images" in s.value for s in at.subheader)


def test_a_folder_in_a_configured_root_is_read(app_env, page, tmp_path, monkeypatch, chest_sample):
    """The same folder is refused, then read once it is under a root named in MEDCLF_DATA_ROOTS."""
    import shutil

    data = tmp_path / "elsewhere" / "chest"
    shutil.copytree(chest_sample, data)
    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path / "nothing-here"))
    at = server_folder(page, "train", data)
    assert not at.exception and "was not found in the folders" in rendered(at.error[0].value)
    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path / "elsewhere"))
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.metric[0].value == "80"


def test_no_password_no_prompt(own_models, monkeypatch):
    monkeypatch.delenv("MEDCLF_PASSWORD", raising=False)
    at = _app()
    at.run()
    assert not at.exception
    assert at.title[0].value == "Predict"
    assert not [t for t in at.text_input if t.label == "Access password"]


def test_with_a_password_the_app_shows_nothing_else(own_models, monkeypatch):
    monkeypatch.setenv("MEDCLF_PASSWORD", "open sesame")
    at = _app()
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["medclf"]
    assert [t.label for t in at.text_input] == ["Access password"]
    assert not at.sidebar.selectbox  # not even the model picker


SUBMIT = "FormSubmitter:medclf_password_form-Open the app"


def test_the_page_opens_with_the_right_password_only(own_models, monkeypatch, page):
    """AppTest runs the page itself after the first run (as a fresh server does for a page's URL)."""
    monkeypatch.setenv("MEDCLF_PASSWORD", "open sesame")
    at = page("predict")
    at.run()
    at.text_input(key="_medclf_password").set_value("open sesam")
    at.button(key=SUBMIT).click()
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["medclf"]
    assert at.error[0].value == "That password is not right. Ask the person who runs this server for it."
    assert not at.file_uploader
    at.text_input(key="_medclf_password").set_value("open sesame")
    at.button(key=SUBMIT).click()
    at.run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Predict" and at.file_uploader
    at.run()
    assert not at.exception and at.title[0].value == "Predict"  # unlocked for the session
    assert not [t for t in at.text_input if t.label == "Access password"]


@pytest.mark.parametrize("name", PAGES)
def test_a_page_opened_without_app_py_asks_too(own_models, monkeypatch, page, name):
    """A fresh server runs a page opened by its URL without app.py (Streamlit's pages/ folder mode)."""
    monkeypatch.setenv("MEDCLF_PASSWORD", "open sesame")
    at = page(name)
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["medclf"]
    assert [t.label for t in at.text_input] == ["Access password"]


def test_every_page_lets_its_session_go_when_the_tab_closes(own_models, monkeypatch, page):
    """Streamlit keeps a closed tab's session (state, uploads, images) for a reconnect and never frees it once
    that expires (bench/session_memory.py): every page marks its session as not resumable."""
    from streamlit.runtime import Runtime

    calls = []

    class Spy:
        def __init__(self, real):
            self._real = real

        def __getattr__(self, name):
            return getattr(self._real, name)

        def mark_session_nonresumable(self, session_id):
            self._real.mark_session_nonresumable(session_id)  # AppTest's runtime has Runtime's real methods only
            calls.append(session_id)

    monkeypatch.setattr(Runtime, "instance", classmethod(lambda cls: Spy(cls._instance)))
    for name in PAGES:
        calls.clear()
        at = page(name)
        at.run()
        assert not at.exception, name
        assert len(calls) == 1 and calls[0], name
        at.run()
        assert len(calls) == 1, name  # once per session
