"""The house rules of medclf_core, checked from the source (no imports of the package needed).

- the subpackages are layers: a module imports only from its own subpackage or from a lower layer;
- no import cycle between modules, counting imports inside functions too;
- no module over 400 lines, no function over 60 lines;
- every subpackage's ``__init__`` says what the layer does and imports nothing heavy;
- ``import medclf_core`` and every subpackage import without TensorFlow, Keras, scikit-learn or plotly.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import MAX_FUNCTION_LINES, MAX_MODULE_LINES, oversized

PACKAGE = Path(__file__).resolve().parents[2] / "medclf_core"

# Lowest first. "base" holds the two modules every layer may use.
LAYERS = ["base", "io", "data", "models", "registry", "trust", "explain", "inference", "training", "reports",
          "pacs", "server", "cli", "top"]
BASE_MODULES = {"medclf_core.errors", "medclf_core.formatting"}
HEAVY = ("tensorflow", "keras", "sklearn", "plotly", "streamlit")  # cv2 and numpy are the image layer's own


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    if module in BASE_MODULES:
        return "base"
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "top"
    return parts[1]


def resolve(module: str, is_package: bool, node: ast.AST) -> set[str]:
    """The medclf_core modules one import statement loads (a package's __init__ included)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    found = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= resolve(module, path.name == "__init__.py", node)
    found.discard(module)
    # importing medclf_core.x.y loads the packages above it; only the leaf counts as this module's choice
    return {m for m in found if not (MODULES[m].name == "__init__.py" and any(o.startswith(m + ".") for o in found))}


GRAPH = {m: imports_of(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_down_the_layers(module):
    mine = LAYERS.index(layer_of(module))
    upward = sorted(dep for dep in GRAPH[module]
                    if LAYERS.index(layer_of(dep)) > mine and dep != "medclf_core")
    assert not upward, f"{module} ({layer_of(module)}) imports a higher layer: {upward}"


def test_no_import_cycle():
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                cycles.append(trail[trail.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_layer_check_sees_an_upward_and_a_cyclic_import(tmp_path):
    """The checks above can fail: an io module importing training is upward, a pair importing each other cycles."""
    tree = ast.parse("from medclf_core.training.config import TrainConfig\n")
    deps = resolve("medclf_core.io.images", False, tree.body[0])
    assert deps == {"medclf_core.training.config"}
    assert LAYERS.index(layer_of("medclf_core.training.config")) > LAYERS.index(layer_of("medclf_core.io.images"))
    relative = ast.parse("from .pixels import DecodedImage\n").body[0]
    assert resolve("medclf_core.io.images", False, relative) == {"medclf_core.io.pixels"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_and_function_sizes(module):
    lines, long = oversized(MODULES[module].read_text())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines"
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"


SUBPACKAGES = sorted(m for m, p in MODULES.items() if p.name == "__init__.py" and m != "medclf_core")


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_layer_says_what_it_does_and_may_import(package):
    tree = ast.parse(MODULES[package].read_text())
    doc = ast.get_docstring(tree) or ""
    assert len(doc.split()) >= 12, f"{package}/__init__.py needs a docstring: what the layer does, what it may import"
    assert "import" in doc.lower(), f"{package}/__init__.py: say what the layer may import"


def test_importing_the_package_and_its_layers_stays_light():
    code = ("import sys, json\nimport medclf_core\n"
            + "".join(f"import {p}\n" for p in SUBPACKAGES)
            + f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
