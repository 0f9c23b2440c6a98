#!/usr/bin/env bash
# Refresh the README's screenshots (docs/screenshots/*.png) by running the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
MEDCLF_SCREENSHOTS_DIR="$PWD/docs/screenshots" MEDCLF_REQUIRE_BROWSER=1 scripts/test.sh tests/e2e -p no:cacheprovider "$@"
