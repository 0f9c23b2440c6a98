"""What the browser tests share: the app served by `streamlit run app.py` on a free local port with its own
models and jobs folders, Chromium's arguments, and waiting for a script run to end. (Import as
``from e2e.app_browser import ...``; the ``chromium`` fixture is in tests/e2e/conftest.py.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from helpers import REPO

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(models: Path, base: Path):
    """`streamlit run app.py` on a free local port, reading ``models`` and a jobs folder under ``base``;
    yields ``{"url", "models", "log"}`` once its health check answers, and stops it (its process group) after."""
    port = _free_port()
    env = {**os.environ, "MEDCLF_MODELS_DIR": str(models), "MEDCLF_JOBS_DIR": str(base / "jobs"),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    env.pop("MEDCLF_DEFAULT_MODEL", None)
    log_path = base / "streamlit.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("streamlit did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.5)
        yield {"url": url, "models": models, "log": log_path}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def wait_idle(page, timeout=120_000):
    """Wait until Streamlit has finished running the script (no 'running' status widget)."""
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=timeout)


def go(page, server, path: str):
    """Open the app's page ``path`` ('' is the default page) and wait for its script run to end."""
    page.goto(f"{server['url']}/{path}")
    page.wait_for_selector("[data-testid='stSidebar']")
    wait_idle(page)
