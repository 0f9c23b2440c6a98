"""The package runs from an install, not only from a checkout: a wheel built from pyproject.toml, installed
into a folder of its own and used from another working directory, lists models by the documented rule
(``$MEDCLF_MODELS_DIR``, else ``./models`` in the working directory) and never reads the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import REPO


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python, env)``: this interpreter without its site hooks (``-S``: no editable-install finder) and an
    environment whose path is only the installed wheel and this venv's third-party packages."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "medclf_core", src / "medclf_core", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = subprocess.run([*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel")],
                           cwd=src, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "wheel").glob("medclf-*.whl")
    target = tmp / "target"
    done = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLF_")}
    env.update(PYTHONPATH=os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]),
               TF_CPP_MIN_LOG_LEVEL="3", MEDCLF_JOBS_DIR=str(tmp / "jobs"))
    return [sys.executable, "-S"], env, target


def test_the_installed_package_is_the_wheels_and_holds_every_subpackage(installed, tmp_path):
    python, env, target = installed
    code = ("import medclf_core, medclf_core.cli.commands, medclf_core.server.streamlit_compat; "
            "print(medclf_core.__file__)")
    out = _run([*python, "-c", code], tmp_path, env)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(target)
    assert _run([*python, "-m", "medclf_core", "--help"], tmp_path, env).stdout.startswith("usage:")
    assert (target / "bin" / "medclf").is_file()  # the console script of [project.scripts]


def test_medclf_list_uses_the_models_folder_of_the_environment_else_of_the_working_directory(installed, tmp_path):
    python, env, target = installed
    medclf = [*python, str(target / "bin" / "medclf")]
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _run([*medclf, "list"], empty, env)
    assert out.returncode == 0, out.stderr
    assert "No models registered yet" in out.stdout  # ./models of the working directory: there is none

    here = tmp_path / "here"
    (here / "models").mkdir(parents=True)
    shutil.copytree(REPO / "models" / "chest-xray-pneumonia", here / "models" / "chest-xray-pneumonia",
                    ignore=shutil.ignore_patterns("*.keras", "*.npz"))
    out = _run([*medclf, "list", "--json"], here, env)
    assert out.returncode == 0, out.stderr
    assert [Path(r["run_dir"]) for r in json.loads(out.stdout)] == [here / "models" / "chest-xray-pneumonia"]

    out = _run([*medclf, "list", "--json"], empty, {**env, "MEDCLF_MODELS_DIR": str(here / "models")})
    assert [r["name"] for r in json.loads(out.stdout)] == ["chest-xray-pneumonia"]
