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


@pytest.mark.parametrize("path", APP_MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_heat_map_overlay_uses_the_one_opacity(path: Path):
    """The Evaluate page drew its misclassified images' maps at 0.4 after every other view moved to
    OVERLAY_OPACITY (0.45): an overlay's opacity is the constant or the user's own choice, never a literal."""
    import re

    literal = re.findall(r"\.overlay\(\s*[0-9.]+", path.read_text(encoding="utf-8"))
    assert not literal, f"{path.name}: {literal}"
