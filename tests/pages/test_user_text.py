"""Issue 17 item 5: names that come from users (class folders, run names, tasks, files) are shown as text.

A class folder named ``![p](https:example.com)`` must not make every visitor's browser fetch that
address, and a run named ``m.__bold__.x`` must not turn bold: every element that renders Markdown gets
the name escaped (``app_ui.md_escape``) or shows it as plain text.
"""

from __future__ import annotations

import json
import shutil

from helpers import CHEST_SAMPLE, rendered, server_folder

IMAGE_NAME = "![p](https:example.com)"
RUN_NAME = "m.__bold__.x"
TASK = "![t](https:example.com/t.png) **task**"
MARKDOWN_KINDS = ("markdown", "caption", "subheader", "title", "header", "info", "warning", "error", "success",
                  "toast", "expander")


def _markdown_elements(at) -> list[tuple[str, str]]:
    """(kind, text) of every element on the page whose text Streamlit renders as Markdown."""
    out = []
    for kind in MARKDOWN_KINDS:
        for el in getattr(at, kind, []) or []:
            value = getattr(el, "value", None) if kind != "expander" else getattr(el, "label", None)
            if isinstance(value, str):
                out.append((kind, value))
    out += [("button", b.label) for b in at.button]
    for table in getattr(at, "table", []) or []:  # st.table renders its cells and headers as Markdown
        frame = table.value
        cells = [*map(str, frame.columns), *map(str, frame.index)] + [v for v in frame.to_numpy().ravel()
                                                                      if isinstance(v, str)]
        out += [("table", c) for c in cells]
    return out


def _markdown_values(at) -> list[str]:
    return [v for _, v in _markdown_elements(at)]


def _assert_no_markdown_from_names(at) -> None:
    for kind, value in _markdown_elements(at):
        assert "![" not in value and "](" not in value, (kind, value)
        assert "__" not in value and "**task**" not in value, (kind, value)


def test_a_class_folder_named_like_an_image_on_the_train_page(app_env, page, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(CHEST_SAMPLE / "NORMAL", data / "train" / "NORMAL")
    shutil.copytree(CHEST_SAMPLE / "PNEUMONIA", data / "train" / IMAGE_NAME)
    shutil.copytree(CHEST_SAMPLE / "NORMAL", data / "test" / "NORMAL")  # the odd class has no test images
    first = sorted((data / "train" / "NORMAL").iterdir())[0]
    shutil.copy(first, data / "train" / IMAGE_NAME / "copy.jpeg")  # one duplicate filed under both classes
    at = server_folder(page, "train", data)
    assert not at.exception
    assert at.metric[1].value == "2"  # the audit ran: two classes
    warned = [rendered(w.value) for w in at.warning]
    assert any(f"Class '{IMAGE_NAME}' has no images in 'test'" in w for w in warned), warned
    _assert_no_markdown_from_names(at)


def test_a_run_and_task_named_with_markdown_on_every_model_page(tmp_path, monkeypatch, trained_run, page):
    models = tmp_path / "models"
    run = models / "marked"
    shutil.copytree(trained_run, run)
    card = json.loads((run / "card.json").read_text())
    card.update(name=RUN_NAME, task=TASK)
    (run / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(models))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.delenv("MEDCLF_DEFAULT_MODEL", raising=False)
    for name in ("predict", "models", "evaluate"):
        at = page(name)
        at.run()
        assert not at.exception, name
        shown = " ".join(rendered(v) for v in _markdown_values(at))
        assert RUN_NAME in shown, (name, shown[:300])  # the name is there, as text
        _assert_no_markdown_from_names(at)
    at = page("predict")
    at.run()
    assert TASK in " ".join(rendered(m.value) for m in at.markdown)
