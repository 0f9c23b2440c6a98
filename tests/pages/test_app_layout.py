"""The app side keeps the package's size rules (tests/medclf_core/test_layout.py, helpers.oversized): the server
script, the pages and their UI helpers, each at most 400 lines with no function over 60; checked from the source."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import MAX_FUNCTION_LINES, MAX_MODULE_LINES, REPO, oversized

APP_MODULES = sorted([REPO / "app.py", REPO / "streamlit_app.py", *REPO.glob("*_ui.py"), *(REPO / "pages").glob("*.py")])


def test_the_app_side_is_found():
    names = {p.name for p in APP_MODULES}
    assert {"app.py", "streamlit_app.py", "app_ui.py", "predict.py", "train.py"} <= names


@pytest.mark.parametrize("path", APP_MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_app_module_and_function_sizes(path: Path):
    lines, long = oversized(path.read_text(encoding="utf-8"))
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
