#!/usr/bin/env bash
# Set up (venv + pinned requirements) and start the app on http://localhost:8501 with the bundled models.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
export TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/streamlit run app.py "$@"
