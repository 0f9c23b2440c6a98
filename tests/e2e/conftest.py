"""Fixtures of the browser tests: Debian's Chromium (helpers in tests/e2e/app_browser.py).

Skipped, with the reason, when Playwright or Chromium is missing, unless ``MEDCLF_REQUIRE_BROWSER=1``
(CI sets it), in which case it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.app_browser import CHROMIUM_CANDIDATES


def _missing(reason: str):
    if os.environ.get("MEDCLF_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser test required but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed (pip install -r requirements-dev.txt)")
    path = os.environ.get("MEDCLF_CHROMIUM") or next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None)
    if not path:
        _missing("Chromium is not installed (apt-get install -y chromium; scripts/test.sh does this as root)")
    return path
