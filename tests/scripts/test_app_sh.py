"""scripts/app.sh and .streamlit/config.toml: local-only by default, no file watcher, capped malloc arenas."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib

import pytest

from helpers import REPO


@pytest.fixture
def app_sh(tmp_path):
    """scripts/app.sh in a copy whose setup step and streamlit only print what they were given."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "app.sh", tmp_path / "scripts" / "app.sh")
    (tmp_path / "scripts" / "setup.sh").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / ".venv" / "bin" / "streamlit").write_text('#!/bin/sh\necho "$MALLOC_ARENA_MAX|$*"\n')
    for p in (tmp_path / "scripts" / "app.sh", tmp_path / "scripts" / "setup.sh", tmp_path / ".venv" / "bin" / "streamlit"):
        p.chmod(0o755)

    def run(*args: str, **env: str) -> tuple[str, list[str]]:
        clean = {k: v for k, v in os.environ.items() if k not in ("MEDCLF_ADDRESS", "MALLOC_ARENA_MAX")}
        out = subprocess.run([str(tmp_path / "scripts" / "app.sh"), *args], env={**clean, **env},
                             capture_output=True, text=True, check=True).stdout.strip()
        arenas, argv = out.split("|", 1)
        return arenas, argv.split()

    return run


def test_it_listens_on_localhost_only_without_a_file_watcher(app_sh):
    arenas, argv = app_sh()
    assert argv[:2] == ["run", "app.py"]
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.fileWatcherType") + 1] == "none"
    assert arenas == "2"


def test_it_serves_a_network_only_when_told(app_sh):
    _, argv = app_sh("--server.port", "9000", MEDCLF_ADDRESS="0.0.0.0")
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0" and argv[-2:] == ["--server.port", "9000"]
    for given in (["--server.address", "10.0.0.6"], ["--server.address=10.0.0.5"]):
        _, argv = app_sh(*given)
        assert [a for a in argv if a.startswith("--server.address")] == [given[0]]  # only the caller's


def test_arenas_can_be_set_by_the_caller(app_sh):
    assert app_sh(MALLOC_ARENA_MAX="4")[0] == "4"


def test_the_streamlit_config_has_the_same_defaults():
    server = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "127.0.0.1" and server["fileWatcherType"] == "none"
