#!/usr/bin/env bash
# Retrain the bundled models from their committed configs (needs ../shared/data). Each step is one command:
#   python -m medclf_core train --config configs/<name>.json --models-dir models
# The brain model trains on a folder of links to the three brain sources (87 Navoneel images held out for
# its other-source record), built first by configs/make_brain_dataset.py --sartaj --hold-out navoneel
# (into build/, git-ignored; no image is copied). Then, for its card:
#   python -m medclf_core evaluate brain-mri-tumour build/brain_mri_navoneel_held_out --split all --record
# After the modality model, configs/make_body_part.py and configs/make_plane_probe.py fit the router's body-part
# probe (head or not) and plane probe (axial, sagittal, coronal) on its features.
# Give names to train only some, e.g. configs/train_all.sh chest-xray-pneumonia
# A run whose name is already registered is refused: retrain into another folder to compare, e.g.
#   MODELS_DIR=/tmp/retrained configs/train_all.sh
# Runs are seeded, but TensorFlow's multi-threaded CPU kernels are not bit-for-bit deterministic:
# a retrained model differs slightly. About 6 (modality), 11 (brain, with fine-tuning) and 16 (chest) minutes on
# 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in ${@:-imaging-modality brain-mri-tumour chest-xray-pneumonia}; do
  if [ "$name" = brain-mri-tumour ]; then .venv/bin/python configs/make_brain_dataset.py --sartaj --hold-out navoneel; fi
  .venv/bin/python -m medclf_core train --config "configs/$name.json" --models-dir "${MODELS_DIR:-models}" \
    --events "/tmp/medclf-$name.events.jsonl"
  # the router's body-part and plane probes read the modality model's features: refit them for the new model
  if [ "$name" = imaging-modality ]; then
    .venv/bin/python configs/make_body_part.py --models-dir "${MODELS_DIR:-models}"
    .venv/bin/python configs/make_plane_probe.py --models-dir "${MODELS_DIR:-models}"
  fi
done
