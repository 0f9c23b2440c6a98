"""The app under benchmark: ``streamlit run app.py`` on the bundled models, started and stopped.

Shared by ``bench/app_latency.py`` and ``bench/session_memory.py`` (run as scripts, so this folder
is on ``sys.path``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class AppServer:
    """A server on ``127.0.0.1:port`` with its output in ``log_path``; ``t0`` is when it was started.

    The models folder, default model and password of the caller's environment are dropped, so the
    bundled models are served with no prompt; ``extra_env`` is added last.
    """

    def __init__(self, port: int, log_path: str, extra_env: dict[str, str] | None = None):
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MEDCLF_JOBS_DIR": "/tmp/medclf-bench-jobs"}
        for key in ("MEDCLF_MODELS_DIR", "MEDCLF_DEFAULT_MODEL", "MEDCLF_PASSWORD"):
            env.pop(key, None)
        env.update(extra_env or {})
        self.log = open(log_path, "wb")  # noqa: SIM115 - open for the server's lifetime
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
             "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"], cwd=REPO, env=env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_health(self, timeout_s: float = 120.0) -> None:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("streamlit did not start")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.log.close()
