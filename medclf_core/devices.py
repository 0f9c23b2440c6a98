"""Which devices a run uses: every local GPU through MirroredStrategy, mixed precision on GPU.

On a CPU-only machine this is a no-op: the default strategy, float32.

Learning-rate rule with several GPUs: the global batch is ``batch_size x replicas``
and the learning rate is scaled linearly by the number of replicas (Goyal et al.,
2017), which keeps the per-example step size of the single-device recipe.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass


@dataclass
class DevicePlan:
    strategy: object
    replicas: int
    gpus: list[str]
    mixed_precision: str | None   # "mixed_float16", "mixed_bfloat16" or None

    def describe(self) -> str:
        where = f"{len(self.gpus)} GPU(s): {', '.join(self.gpus)}" if self.gpus else "CPU"
        mp = f", mixed precision {self.mixed_precision}" if self.mixed_precision else ""
        return f"{where}{mp}"


def list_gpus() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def _bf16_capable() -> bool:
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if cc < (8, 0):
            return False
    return True


def plan_devices(mixed_precision: str = "auto") -> DevicePlan:
    """Choose the strategy and precision. ``mixed_precision``: auto | on | off | float16 | bfloat16."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised
            tf.config.experimental.set_memory_growth(gpu, True)
    policy = None
    if mixed_precision in ("on", "auto") and gpus:
        policy = "mixed_bfloat16" if _bf16_capable() else "mixed_float16"
    elif mixed_precision in ("float16", "bfloat16"):
        policy = f"mixed_{mixed_precision}"
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    return DevicePlan(strategy, strategy.num_replicas_in_sync, [g.name for g in gpus], policy)


@contextlib.contextmanager
def precision_policy(policy: str | None):
    """Set the Keras dtype policy for model building; restore the previous one after."""
    import keras

    previous = keras.config.dtype_policy().name
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
