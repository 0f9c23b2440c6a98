"""The app side keeps the package's size rules (tests/medclf_core/test_layout.py): the server script, the pages
and their UI helpers, each at most 400 lines with no function over 60; checked from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP_MODULES = sorted([REPO / "app.py", REPO / "streamlit_app.py", *REPO.glob("*_ui.py"), *(REPO / "pages").glob("*.py")])
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_the_app_side_is_found():
    names = {p.name for p in APP_MODULES}
    assert {"app.py", "streamlit_app.py", "app_ui.py", "predict.py", "train.py"} <= names


@pytest.mark.parametrize("path", APP_MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_app_module_and_function_sizes(path: Path):
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(source.splitlines())} lines"
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {long}"
