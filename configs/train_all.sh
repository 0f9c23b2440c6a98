#!/usr/bin/env bash
# Retrain the bundled models from their committed configs (needs ../shared/data). One command each:
#   python -m medclf_core train --config configs/<name>.json --models-dir models
set -euo pipefail
cd "$(dirname "$0")/.."
for name in "${@:-imaging-modality brain-mri-tumour chest-xray-pneumonia}"; do
  for n in $name; do
    .venv/bin/python -m medclf_core train --config "configs/$n.json" --models-dir models --events "/tmp/medclf-$n.events.jsonl"
  done
done
