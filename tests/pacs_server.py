"""A real PACS for the tests: Orthanc with its DICOMweb plugin, started from ``configs/pacs/orthanc.json`` in a
temporary folder on a free port (the same configuration ``scripts/pacs.sh`` starts for development).

:func:`require_orthanc` skips a test with the reason when Orthanc is not installed and cannot be, except in
CI (``CI=true``) or with ``MEDCLF_REQUIRE_PACS=1``, where it fails instead: there the PACS tests must run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "pacs" / "orthanc.json"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                            if os.access(p, os.X_OK)), None)


def orthanc_missing_reason() -> str | None:
    if orthanc_binary() is None:
        return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb; scripts/test.sh does it as root)"
    if not PLUGIN.exists():
        return f"Orthanc's DICOMweb plugin is not installed ({PLUGIN}: apt-get install orthanc-dicomweb)"
    return None


def require_orthanc() -> None:
    reason = orthanc_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("MEDCLF_REQUIRE_PACS") == "1":
        pytest.fail(f"The PACS tests must run here: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    """One Orthanc process: ``url`` is its DICOMweb root, ``rest`` its REST root; ``user``/``password`` its login."""

    def __init__(self, folder: Path, port: int | None = None, user: str = "medclf"):
        self.folder = Path(folder)
        self.port = port or free_port()
        self.user, self.password = user, secrets.token_urlsafe(12)
        self.rest = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.rest}/dicom-web"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> OrthancServer:
        conf = self.folder / "config"
        conf.mkdir(parents=True, exist_ok=True)
        shutil.copy(CONFIG, conf / "orthanc.json")
        (conf / "local.json").write_text(json.dumps({
            "HttpPort": self.port, "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "RegisteredUsers": {self.user: self.password}}))
        log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen([orthanc_binary(), str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.folder)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if self.session().get(f"{self.url}/studies", timeout=2).status_code == 200:
                    return self
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        raise RuntimeError("Orthanc did not start in time")

    def session(self):
        import requests

        s = requests.Session()
        s.auth = (self.user, self.password)
        return s

    def upload(self, paths) -> list[str]:
        """Store DICOM files (Orthanc's REST upload, as scripts/pacs.sh does); their Orthanc IDs."""
        s = self.session()
        ids = []
        for p in paths:
            r = s.post(f"{self.rest}/instances", data=Path(p).read_bytes(), timeout=20)
            r.raise_for_status()
            ids.append(r.json()["ID"])
        return ids

    def clear(self) -> None:
        """Remove every study (a clean PACS between tests)."""
        s = self.session()
        for study in s.get(f"{self.rest}/studies", timeout=20).json():
            s.delete(f"{self.rest}/studies/{study}", timeout=20).raise_for_status()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
