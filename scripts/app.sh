#!/usr/bin/env bash
# Set up (venv + pinned requirements) and start the app on http://localhost:8501 with the bundled models.
#
# It listens on 127.0.0.1 only. To serve other machines, set MEDCLF_ADDRESS (e.g. MEDCLF_ADDRESS=0.0.0.0)
# or pass --server.address yourself; on a shared server also set an access password (MEDCLF_PASSWORD, or
# medclf_password in .streamlit/secrets.toml) and the data folders the app may read (MEDCLF_DATA_ROOTS).
# Any other arguments go on to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
export TF_CPP_MIN_LOG_LEVEL=3
# The models' LiteRT files (served without TensorFlow: ready ~1 s after the start instead of ~14 s), made
# from each model.keras once (about 35 s of CPU per model) and again only when a model.keras changes.
# A failure only costs the fast start: the app then serves the models with TensorFlow.
.venv/bin/python -m medclf_core export-lite --all --stale --models-dir "${MEDCLF_MODELS_DIR:-models}" \
  || echo "Could not write the models' LiteRT files; the app will use TensorFlow (slower start)." >&2
# glibc gives threads that allocate at once their own malloc arenas (up to 8 per core) and keeps the
# freed memory in them; fewer arenas fragment less, and the app trims them (medclf_core.server.memory).
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
address=(--server.address "${MEDCLF_ADDRESS:-127.0.0.1}")
for arg in "$@"; do
  case "$arg" in --server.address|--server.address=*) address=() ;; esac
done
# No file watcher: it watched .venv and the data folders and overflowed inotify (issue 16).
exec .venv/bin/streamlit run app.py "${address[@]}" --server.fileWatcherType none "$@"
