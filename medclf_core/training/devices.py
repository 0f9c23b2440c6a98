"""Which devices a run uses: every local GPU, several machines, mixed precision, XLA.

The same ``train`` command picks its engine from the machine it runs on:

- **one machine, no GPU**: the default strategy, float32 (unchanged single-CPU behaviour);
- **one machine, one GPU**: memory growth on, mixed precision (``mixed_bfloat16`` on
  compute capability >= 8.0, else ``mixed_float16``; the classifier layer stays
  float32), XLA where every layer supports it (Keras ``jit_compile``);
- **one machine, several GPUs**: :class:`tf.distribute.MirroredStrategy` over all of them;
- **several machines**: :class:`tf.distribute.MultiWorkerMirroredStrategy` when the
  standard ``TF_CONFIG`` environment variable names a cluster, e.g.
  ``{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}``.
  Run the same command on every machine; the chief (``task.type == "chief"``, or
  worker 0 when the cluster has no chief) writes the registry entry.

Every part has a switch: ``mixed_precision`` (auto | on | off | float16 | bfloat16),
``xla`` (auto | on | off), ``memory_growth`` (True/False), ``distribute``
(auto | off: off = a single device even when several GPUs or TF_CONFIG are present).
``logical_devices=N`` splits the CPU into N logical devices and mirrors over them:
a way to run the distributed code paths on a machine without GPUs (tests, bench);
it must happen before TensorFlow initialises its devices (a fresh process).

Learning-rate rule: the global batch is ``batch_size x replicas`` (per-device batch
unchanged) and the learning rate is scaled linearly by the number of replicas
(Goyal et al., 2017, "Accurate, Large Minibatch SGD"), which keeps the per-example
step size of the single-device recipe. With MultiWorkerMirroredStrategy ``replicas``
counts the devices of all workers.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

MIXED_PRECISION_CHOICES = ("auto", "on", "off", "float16", "bfloat16")
XLA_CHOICES = ("auto", "on", "off")
DISTRIBUTE_CHOICES = ("auto", "off")


@dataclass
class ClusterSpec:
    """This process's place in a ``TF_CONFIG`` cluster (``None`` from :func:`cluster_from_env` when alone)."""

    workers: list[str]
    task_type: str
    task_index: int
    chief: list[str] = field(default_factory=list)

    @property
    def num_workers(self) -> int:
        return len(self.workers) + len(self.chief)

    @property
    def is_chief(self) -> bool:
        if self.chief:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def task_id(self) -> str:
        return f"{self.task_type}-{self.task_index}"


def cluster_from_env(environ=None) -> ClusterSpec | None:
    """Parse ``TF_CONFIG``; ``None`` when it is absent or names a single task (one machine)."""
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from None
    cluster = conf.get("cluster") or {}
    task = conf.get("task") or {}
    workers = list(cluster.get("worker") or [])
    chief = list(cluster.get("chief") or [])
    if len(workers) + len(chief) <= 1:
        return None
    task_type = task.get("type", "worker")
    if task_type not in ("worker", "chief"):
        raise ValueError(f"TF_CONFIG task type '{task_type}' is not supported: use 'worker' or 'chief'.")
    return ClusterSpec(workers=workers, chief=chief, task_type=task_type, task_index=int(task.get("index", 0)))


@dataclass
class DevicePlan:
    strategy: object
    replicas: int
    gpus: list[str]
    mixed_precision: str | None   # "mixed_float16", "mixed_bfloat16" or None
    xla: bool | str = "auto"      # passed to Keras compile(jit_compile=...)
    cluster: ClusterSpec | None = None
    devices: list[str] = field(default_factory=list)   # the local devices that hold replicas
    kind: str = "default"         # default | mirrored | multi_worker

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @property
    def num_workers(self) -> int:
        return self.cluster.num_workers if self.cluster else 1

    @property
    def distributed(self) -> bool:
        return self.kind != "default"

    def describe(self) -> str:
        """One line for people: where the run trains."""
        if self.gpus:
            where = f"{len(self.gpus)} GPU(s): {', '.join(self.gpus)}"
        elif self.kind == "mirrored":
            where = f"{len(self.devices)} logical CPU devices"
        else:
            where = "CPU"
        if self.cluster:
            where = (f"{self.cluster.num_workers} workers x {where} ({self.replicas} replicas, "
                     f"this is {self.cluster.task_id}{', chief' if self.is_chief else ''})")
        elif self.kind == "mirrored":
            where += f", MirroredStrategy ({self.replicas} replicas)"
        mp = f", mixed precision {self.mixed_precision}" if self.mixed_precision else ""
        xla = ", XLA" if self.xla is True else ""
        return f"{where}{mp}{xla}"

    def info(self) -> dict:
        """The same as a dict (for the app's event stream and the model card)."""
        return {"description": self.describe(), "strategy": self.kind, "replicas": self.replicas,
                "gpus": self.gpus, "devices": self.devices, "mixed_precision": self.mixed_precision,
                "xla": self.xla, "workers": self.num_workers,
                "task": self.cluster.task_id if self.cluster else None, "chief": self.is_chief}


def _bf16_capable() -> bool:
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if cc < (8, 0):
            return False
    return True


def force_logical_cpus(n: int) -> list[str]:
    """Split the CPU into ``n`` logical devices. Only works before TensorFlow initialises its devices.

    Raises RuntimeError when TF is already initialised with another number of CPU devices.
    """
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        current = tf.config.list_logical_devices("CPU")
        if len(current) != n:
            raise RuntimeError(f"Cannot split the CPU into {n} devices: TensorFlow is already initialised "
                               f"with {len(current)}. Do it first thing in a fresh process.") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def resolve_policy(mixed_precision: str, has_gpu: bool, bf16: bool) -> str | None:
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}")
    if mixed_precision == "on" or (mixed_precision == "auto" and has_gpu):
        return "mixed_bfloat16" if (has_gpu and bf16) or not has_gpu else "mixed_float16"
    if mixed_precision in ("float16", "bfloat16"):
        return f"mixed_{mixed_precision}"
    return None


def plan_devices(mixed_precision: str = "auto", *, xla: str = "auto", memory_growth: bool = True,
                 distribute: str = "auto", logical_devices: int | None = None, environ=None) -> DevicePlan:
    """Choose strategy, precision and XLA for this process.

    ``mixed_precision``: auto (GPU only) | on (bfloat16 on CPU or Ampere+ GPUs, else float16) | off |
    float16 | bfloat16. ``xla``: auto (Keras decides: on for one GPU when all layers support it) | on | off.
    ``distribute``: auto | off. ``logical_devices``: split the CPU into N devices and mirror over them.
    """
    import tensorflow as tf

    if xla not in XLA_CHOICES:
        raise ValueError(f"xla must be one of {', '.join(XLA_CHOICES)}")
    if distribute not in DISTRIBUTE_CHOICES:
        raise ValueError(f"distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}")
    cluster = cluster_from_env(environ) if distribute == "auto" else None
    cpu_devices: list[str] = []
    if logical_devices and logical_devices > 1:
        cpu_devices = force_logical_cpus(logical_devices)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError, ValueError):  # already initialised
            tf.config.experimental.set_memory_growth(gpu, bool(memory_growth))
    policy = resolve_policy(mixed_precision, bool(gpus), _bf16_capable() if gpus else False)

    kind, devices = "default", []
    if cluster is not None:
        strategy = _multi_worker_strategy(cluster)
        kind = "multi_worker"
        devices = list(strategy.extended.worker_devices)
    elif distribute == "auto" and len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        kind, devices = "mirrored", list(strategy.extended.worker_devices)
    elif distribute == "auto" and len(cpu_devices) > 1 and not gpus:
        strategy = tf.distribute.MirroredStrategy(devices=cpu_devices)
        kind, devices = "mirrored", cpu_devices
    else:
        strategy = tf.distribute.get_strategy()
    jit = {"auto": "auto", "on": True, "off": False}[xla]
    return DevicePlan(strategy, strategy.num_replicas_in_sync, [g.name for g in gpus], policy, jit, cluster,
                      devices, kind)


_MWMS: dict = {}


def _multi_worker_strategy(cluster: ClusterSpec):
    """One MultiWorkerMirroredStrategy per process (TF allows only one to be created)."""
    import tensorflow as tf

    key = json.dumps(os.environ.get("TF_CONFIG"))
    if key not in _MWMS:
        gpus = tf.config.list_physical_devices("GPU")
        impl = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
                else tf.distribute.experimental.CommunicationImplementation.RING)
        options = tf.distribute.experimental.CommunicationOptions(implementation=impl)
        _MWMS[key] = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return _MWMS[key]


def gather_min(strategy, value: int) -> int:
    """The smallest of ``value`` over all workers (a collective: every worker must call it)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return int(value)
    per_replica = strategy.run(lambda: tf.constant([int(value)], dtype=tf.int64))
    gathered = strategy.gather(per_replica, axis=0)
    return int(tf.reduce_min(gathered).numpy())


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


def free_local_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1, for a local ``TF_CONFIG`` cluster (tests, benchmarks)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
