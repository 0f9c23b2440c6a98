#!/usr/bin/env bash
# Set up (venv + pinned requirements) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements-dev.txt
# The browser test (tests/e2e) drives Debian's Chromium with Playwright (which cannot download browsers
# here). Install it when missing and we are root; otherwise that test is skipped and says why.
if [ ! -x /usr/bin/chromium ] && [ -z "${MEDCLF_CHROMIUM:-}" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "Installing chromium for the browser test ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "Could not install chromium; the browser test will be skipped." >&2
fi
# The PACS tests (tests/medclf_core/pacs, the Predict page's PACS source) start their own Orthanc with its
# DICOMweb plugin (Debian's orthanc and orthanc-dicomweb; their service scripts are not used). Installed the
# same way; otherwise those tests are skipped and say why (they fail instead under CI or MEDCLF_REQUIRE_PACS=1).
if { [ ! -x /usr/sbin/Orthanc ] || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; } \
    && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "Installing orthanc and orthanc-dicomweb for the PACS tests ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null) \
    || echo "Could not install Orthanc; the PACS tests will be skipped." >&2
fi
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
# Two workers (pytest-xdist), each test file on one of them (--dist loadfile: a module's fixtures are made once):
# many tests wait on a browser, a server or a subprocess, so two cores do two of them at once.
# MEDCLF_TEST_WORKERS=0 runs everything in this process (for --pdb); N runs N workers.
exec .venv/bin/python -m pytest -n "${MEDCLF_TEST_WORKERS:-2}" --dist loadfile "$@"
