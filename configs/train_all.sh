#!/usr/bin/env bash
# Retrain the bundled models from their committed configs (needs ../shared/data), in dependency order
# (brain-mri-tumour starts from imaging-modality). Each step is one command:
#   python -m medclf_core train --config configs/<name>.json --models-dir models
# Give names to train only some, e.g. configs/train_all.sh chest-xray-pneumonia
# A run whose name is already registered is refused: retrain into another folder to compare, e.g.
#   MODELS_DIR=/tmp/retrained configs/train_all.sh
# Runs are seeded, but TensorFlow's multi-threaded CPU kernels are not bit-for-bit deterministic:
# a retrained model differs slightly, and the small brain set can move by several points.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in ${@:-imaging-modality brain-mri-tumour chest-xray-pneumonia}; do
  .venv/bin/python -m medclf_core train --config "configs/$name.json" --models-dir "${MODELS_DIR:-models}" \
    --events "/tmp/medclf-$name.events.jsonl"
done
