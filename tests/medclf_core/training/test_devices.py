"""medclf_core.training.devices: cluster detection, chief, precision policy, XLA switch, logical CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, TINY, make_pattern_dataset

from medclf_core.training.devices import ClusterSpec, cluster_from_env, plan_devices, precision_policy, resolve_policy


def _tf_config(workers, task_type="worker", index=0, chief=None):
    cluster = {"worker": workers}
    if chief:
        cluster["chief"] = chief
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_no_or_single_task_tf_config_means_one_machine():
    assert cluster_from_env({}) is None
    assert cluster_from_env({"TF_CONFIG": ""}) is None
    assert cluster_from_env(_tf_config(["127.0.0.1:2222"])) is None


def test_cluster_and_chief_detection():
    workers = ["127.0.0.1:2222", "127.0.0.1:2223"]
    w0, w1 = cluster_from_env(_tf_config(workers, index=0)), cluster_from_env(_tf_config(workers, index=1))
    assert w0.num_workers == 2 and w0.is_chief and not w1.is_chief
    assert w1.task_id == "worker-1"
    # with an explicit chief, worker 0 is not the chief
    chief = cluster_from_env(_tf_config(workers, "chief", 0, chief=["127.0.0.1:2221"]))
    worker0 = cluster_from_env(_tf_config(workers, "worker", 0, chief=["127.0.0.1:2221"]))
    assert chief.is_chief and not worker0.is_chief and chief.num_workers == 3
    with pytest.raises(ValueError, match="not valid JSON"):
        cluster_from_env({"TF_CONFIG": "{nope"})
    with pytest.raises(ValueError, match="not supported"):
        cluster_from_env(_tf_config(workers, "ps", 0))
    assert ClusterSpec(workers=workers, task_type="worker", task_index=0).is_chief


def test_policy_resolution():
    assert resolve_policy("auto", has_gpu=False, bf16=False) is None
    assert resolve_policy("auto", has_gpu=True, bf16=True) == "mixed_bfloat16"
    assert resolve_policy("auto", has_gpu=True, bf16=False) == "mixed_float16"
    assert resolve_policy("on", has_gpu=False, bf16=False) == "mixed_bfloat16"  # CPUs: bfloat16, never float16
    assert resolve_policy("off", has_gpu=True, bf16=True) is None
    assert resolve_policy("float16", has_gpu=False, bf16=False) == "mixed_float16"
    with pytest.raises(ValueError):
        resolve_policy("half", has_gpu=False, bf16=False)


def test_cpu_plan_is_the_single_device_default():
    plan = plan_devices("auto", environ={})
    assert plan.kind == "default" and plan.replicas == 1 and plan.mixed_precision is None
    assert plan.is_chief and plan.xla == "auto" and plan.describe() == "CPU"
    assert plan_devices("off", xla="off", environ={}).xla is False
    assert plan_devices("off", xla="on", environ={}).xla is True
    info = plan.info()
    assert info["description"] == "CPU" and info["replicas"] == 1 and info["workers"] == 1
    with pytest.raises(ValueError):
        plan_devices("auto", xla="maybe")
    # distribute="off" ignores a cluster in TF_CONFIG
    off = plan_devices("auto", distribute="off", environ=_tf_config(["127.0.0.1:1", "127.0.0.1:2"]))
    assert off.kind == "default" and off.cluster is None


def test_logical_cpu_devices_need_a_fresh_process():
    code = ("from medclf_core.training.devices import plan_devices; import json; p = plan_devices(logical_devices=3); "
            "print(json.dumps(p.info()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["strategy"] == "mirrored" and info["replicas"] == 3 and len(info["devices"]) == 3
    assert "3 logical CPU devices" in info["description"]


def test_precision_policy_is_scoped():
    import keras

    from medclf_core.models.architectures import build_model

    before = keras.config.dtype_policy().name
    with precision_policy("mixed_bfloat16"):
        model = build_model("simple_cnn", 2, TINY, 1)
    assert keras.config.dtype_policy().name == before
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][0]
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"


@pytest.mark.slow
def test_mixed_precision_run_saves_a_float32_predicting_model(tmp_path):
    """Asked for mixed precision (bfloat16: the CPU kind), the run trains under that policy, records it, and the
    registered model takes and returns float32, within bfloat16 tolerance of the same weights in float32."""
    import keras

    from medclf_core.training.events import EventLog, read_events
    from medclf_core.registry.store import load_run
    from medclf_core.training import TrainConfig, train

    data = make_pattern_dataset(tmp_path / "p", n_per_class=8, size=TINY)
    events = tmp_path / "ev.jsonl"
    run = train(TrainConfig(data=str(data), epochs=1, image_size=TINY, channels=1, batch_size=8,
                            mixed_precision="bfloat16"), models_dir=tmp_path / "m", events=EventLog(events))
    devices = [e for e in read_events(events) if e["event"] == "devices"][0]
    assert devices["mixed_precision"] == "mixed_bfloat16"
    model, card = load_run(run)
    assert card["training"]["mixed_precision"] == "mixed_bfloat16"
    assert card["training"]["images_per_s"] > 0
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][0]
    assert conv.dtype_policy.name == "mixed_bfloat16"  # the saved model keeps the policy it was trained with

    x = np.random.default_rng(0).uniform(0, 255, (6, TINY, TINY, 1)).astype("float32")
    got = model.predict(x, verbose=0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    with precision_policy("float32"):
        reference = keras.models.clone_model(model, clone_function=_as_float32)
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(got, reference.predict(x, verbose=0), atol=0.05)


def _as_float32(layer):
    config = layer.get_config()
    config["dtype"] = "float32"
    return layer.__class__.from_config(config)
