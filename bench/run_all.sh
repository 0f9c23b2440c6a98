#!/usr/bin/env bash
# Every benchmark in one command; prints Markdown tables (copy them into docs/BENCHMARKS.md).
# Needs ../shared/data for the model reports and the pipeline comparison. About 60 minutes on a 2-core CPU.
#   bench/run_all.sh            quick: the pipeline comparison on 250 images per class at 128 px
#   FULL=1 bench/run_all.sh     the seed recipe exactly: all modality images at 224 px
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=3
echo "# medclf benchmarks, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB"
$PY -c "import tensorflow as tf, keras; print('tensorflow', tf.__version__, 'keras', keras.__version__, 'GPUs', len(tf.config.list_physical_devices('GPU')))"
echo; echo "## Bundled models"; $PY bench/models_report.py --external --overlays
echo; echo "## Brain: train on Br35H, test on Navoneel"; $PY configs/make_brain_dataset.py >/dev/null; $PY bench/source_holdout.py
echo; echo "## Transfer recipe against bn_cnn from scratch"; $PY bench/transfer_vs_scratch.py
echo; echo "## Out-of-distribution gate"; $PY bench/ood_report.py; $PY bench/trust_overhead.py
echo; echo "## Prediction latency and batch throughput"; $PY bench/predict_throughput.py
echo; echo "## App in the browser"; $PY bench/app_latency.py
echo; echo "## Memory under concurrent sessions"; $PY bench/session_memory.py --sessions 10 --rounds 2 --after 10 60 150
echo; echo "## Explainability latency"; $PY bench/explain_latency.py
echo; echo "## Input pipeline vs ImageDataGenerator"
if [ -n "${FULL:-}" ]; then $PY bench/pipeline_vs_seed.py; else
  $PY bench/pipeline_vs_seed.py --image-size 128 --limit-per-class 250 --epochs 10; fi
echo; echo "## Scaling"; $PY bench/scaling.py
