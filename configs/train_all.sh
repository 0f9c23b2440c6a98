#!/usr/bin/env bash
# Retrain the bundled models from their committed configs (needs ../shared/data), in dependency order:
#   imaging-modality-96px  -> models/.pretrain/ (not shipped; brain-mri-tumour starts from it)
#   brain-mri-tumour, imaging-modality, chest-xray-pneumonia -> models/
# Each step is one command: python -m medclf_core train --config configs/<name>.json --models-dir DIR
# Give names to train only some, e.g. configs/train_all.sh chest-xray-pneumonia
# A run whose name is already registered is refused: retrain into another folder to compare, e.g.
#   MODELS_DIR=/tmp/retrained configs/train_all.sh
# Runs are seeded, but TensorFlow's multi-threaded CPU kernels are not bit-for-bit deterministic:
# a retrained model differs slightly, and the small brain set can move by several points.
set -euo pipefail
cd "$(dirname "$0")/.."
train() {  # name, models dir
  .venv/bin/python -m medclf_core train --config "configs/$1.json" --models-dir "$2" \
    --events "/tmp/medclf-$1.events.jsonl"
}
for name in ${@:-imaging-modality-96px brain-mri-tumour imaging-modality chest-xray-pneumonia}; do
  if [ "$name" = imaging-modality-96px ]; then train "$name" models/.pretrain; else train "$name" "${MODELS_DIR:-models}"; fi
done
