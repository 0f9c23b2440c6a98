"""One training run's state, built once from a validated :class:`TrainConfig` and carried to registration.

A :class:`TrainingSession` is what every step of a run reads and fills in, in order:
:meth:`TrainingSession.open` (settings validated unless they already were, devices planned,
the models folder checked, an earlier run taken over), :meth:`~TrainingSession.dataset`
(scanned, released at the end), :meth:`~TrainingSession.audit_and_split`,
:meth:`~TrainingSession.work_folder` (resume state, one process at a time), then fitting
(:mod:`~medclf_core.training.fitting`), evaluation (:mod:`~medclf_core.training.evaluate`)
and registration (:mod:`~medclf_core.training.run`) fill ``trained``, ``model``, ``history``
and ``evaluation``. Functions take the session instead of a growing list of arguments.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medclf_core.data.augment import AugmentConfig
from medclf_core.data.audit import audit_dataset
from medclf_core.data.scan import release_dataset, scan_dataset, split_counts
from medclf_core.data.split import split_dataset
from medclf_core.errors import DatasetError, MedclfError, TrainingCancelled
from medclf_core.models.architectures import get_architecture
from medclf_core.models.ensemble import count_members
from medclf_core.io.atomic import write_json
from medclf_core.registry.store import load_run
from medclf_core.training.config import TrainConfig
from medclf_core.training.devices import DevicePlan, plan_devices
from medclf_core.training.events import EventLog


@dataclass(frozen=True)
class MemberSlot:
    """Which model of the run is being fitted: member ``k`` of ``members``, its seed and its work folder."""

    k: int
    members: int
    seed: int
    work: Path

    @property
    def history_path(self) -> Path:
        return self.work / "history.json"


@dataclass
class TrainingSession:
    """A run's settings, data, devices, work folder and results: made by :meth:`open`, filled step by step."""

    cfg: TrainConfig                     # validated, then resolved (architecture defaults filled in)
    models_dir: Path
    plan: DevicePlan
    log: EventLog
    cancel: Callable[[], bool] | None = None
    started: float = field(default_factory=time.time)
    init_model: object = None            # init_from: the earlier run's model and card
    init_card: dict | None = None
    # the data (dataset, audit_and_split)
    index: object = None                 # data.scan's DatasetIndex of the images
    report: object = None                # its audit
    splits: dict | None = None           # {"train", "val", "test"}: lists of dataset items
    counts: dict | None = None           # images per split and class
    work: Path | None = None             # the work folder (resume state)
    # what every member's fit reads (run.prepare_fit)
    augment: AugmentConfig | None = None
    tta: tuple[str, ...] = ()
    val_ds: object = None                # the validation tf.data.Dataset, shared by every member
    class_weight: dict | None = None
    init_weights: list | None = None     # an earlier single model's weights, for every member of an ensemble
    split_init: bool = False             # init_from is an ensemble: member k starts from its member k
    # the outcome
    trained: list = field(default_factory=list)   # fitting.Member, one per model
    model: object = None                 # the one model, or the members merged
    history: list = field(default_factory=list)
    evaluation: object = None            # evaluate.RunEvaluation

    @classmethod
    def open(cls, cfg: TrainConfig, models_dir: Path, log: EventLog,
             cancel: Callable[[], bool] | None = None) -> TrainingSession:
        """The session of a run that can start: settings valid, devices planned, models folder writable.

        ``cfg`` is validated here unless it already was, for ``models_dir`` and unchanged since
        (:meth:`TrainConfig.is_validated`). Emits ``start`` with the resolved settings.
        """
        started = time.time()
        if not cfg.is_validated(models_dir):
            cfg.validate(models_dir)
        # Devices first: a MultiWorkerMirroredStrategy and logical CPU devices must exist before TF runs anything.
        try:
            plan = plan_devices(cfg.mixed_precision, xla=cfg.xla, memory_growth=cfg.memory_growth,
                                distribute=cfg.distribute, logical_devices=cfg.logical_devices)
        except ValueError as exc:
            raise MedclfError(str(exc)) from None
        _check_writable(models_dir)  # before the training, not after it
        init_model, init_card = None, None
        if cfg.init_from:
            init_model, init_card = load_run(cfg.init_from, models_dir)
            cfg = _following(cfg, init_model, init_card)
        cfg = cfg.resolved()
        log.emit("start", config=asdict(cfg))
        return cls(cfg, models_dir, plan, log, cancel, started, init_model, init_card)

    # ---------------------------------------------------------------- what the steps read

    @property
    def spec(self):
        """The architecture's :class:`~medclf_core.models.architectures.ArchSpec`."""
        return get_architecture(self.cfg.arch)

    @property
    def class_names(self) -> list[str]:
        return self.index.class_names

    @property
    def members(self) -> int:
        return self.cfg.ensemble

    @property
    def n_train(self) -> int:
        return len(self.splits["train"])

    @property
    def global_batch(self) -> int:
        """Per-device batch x replicas (all workers)."""
        return self.cfg.batch_size * self.plan.replicas

    @property
    def dataset_options(self) -> dict:
        """The options of every evaluation dataset of the run (``pipeline.make_dataset``)."""
        return dict(image_size=self.cfg.image_size, channels=self.cfg.channels, batch_size=self.global_batch,
                    seed=self.cfg.seed)

    def check_cancel(self) -> None:
        """Raise :class:`TrainingCancelled` when a cancel was asked for."""
        if self.cancel is not None and self.cancel():
            raise TrainingCancelled("Training was cancelled.")

    def slot(self, k: int) -> MemberSlot:
        """Member ``k`` (1-based): seed ``cfg.seed + k - 1``, its own work folder (the run's for one model)."""
        work = self.work if self.members == 1 else self.work / f"member-{k}"
        work.mkdir(parents=True, exist_ok=True)
        return MemberSlot(k, self.members, self.cfg.seed + k - 1, work)

    # ---------------------------------------------------------------- the data and the work folder

    @contextlib.contextmanager
    def dataset(self):
        """Scan the dataset for the run; a zip's temporary extraction is released at the end."""
        self.index = scan_dataset(self.cfg.data)
        try:
            yield self.index
        finally:
            release_dataset(self.index)

    def audit_and_split(self) -> None:
        """Audit the images and split them without leaks (emits ``audit_progress``, ``audit``, ``split``)."""
        cfg, log = self.cfg, self.log

        def progress(done: int, total: int) -> None:
            if done % 200 == 0 or done == total:
                log.emit("audit_progress", done=done, total=total)

        report = audit_dataset(self.index, near_duplicate_distance=cfg.near_duplicate_distance, progress=progress)
        log.emit("audit", counts=report.counts, warnings=report.warnings(), unreadable=len(report.unreadable),
                 duplicate_groups=len(report.duplicate_groups),
                 near_duplicate_groups=len(report.near_duplicate_groups))
        splits = split_dataset(self.index, report, val_fraction=cfg.val_split, test_fraction=cfg.test_split,
                               seed=cfg.seed, group_pattern=cfg.group_pattern)
        if not splits["val"]:
            raise DatasetError("The validation split is empty: use a larger dataset or a larger --val-split.")
        self.report, self.splits = report, splits
        self.counts = split_counts(splits, self.index.class_names)
        log.emit("split", counts=self.counts)

    @contextlib.contextmanager
    def work_folder(self):
        """Hold the run's work folder ``models/.work/<key>/`` (:func:`work_key`) while the block runs.

        One process at a time (:func:`_work_lock`); a cancel removes the folder. A killed run
        leaves it, and the same command resumes from it.
        """
        key = work_key(self.cfg, self.report.fingerprint)
        if self.plan.cluster is not None:  # workers may share a file system: one work folder each
            key = f"{key}-{self.plan.cluster.task_id}"
        self.work = self.models_dir / ".work" / key
        self.work.mkdir(parents=True, exist_ok=True)
        with _work_lock(self.work):
            write_json(self.work / "config.json", asdict(self.cfg))
            try:
                yield self.work
            except TrainingCancelled:
                self.remove_work()
                raise

    def remove_work(self) -> None:
        """Remove the work folder (and ``.work`` itself when no other run is in progress)."""
        shutil.rmtree(self.work, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.work.parent.rmdir()


def _following(cfg: TrainConfig, init_model, init_card: dict) -> TrainConfig:
    """The settings of a fine-tuning run: the earlier run's architecture and input shape."""
    shape = init_card["input_shape"]
    cfg = TrainConfig(**{**asdict(cfg), "arch": init_card["architecture"], "image_size": shape[0],
                         "channels": shape[2]})
    init_members = count_members(init_model)
    if init_members > 1 and cfg.ensemble != init_members:
        # One model per earlier member keeps the card, the heat-map layers and the cost honest.
        raise MedclfError(f"'{init_card['name']}' is an ensemble of {init_members} models: fine-tune it with "
                          f"ensemble {init_members} (each new model starts from the matching one).")
    return cfg


def work_key(cfg: TrainConfig, fingerprint: str) -> str:
    """The work folder of a run: its settings (name included: two named runs never share one) and its data."""
    d = asdict(cfg)
    d["data"] = str(Path(cfg.data).resolve())
    return hashlib.sha256(json.dumps([d, fingerprint], sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _work_lock(work: Path):
    """One process per work folder: the same command started twice is refused while the first runs.

    An OS file lock (released by the kernel when its process dies, so a killed run never
    blocks the resume).
    """
    import fcntl

    fh = open(work / ".lock", "a+")  # held on the open file: removing the finished work folder keeps it valid
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise MedclfError("This run is already being trained by another process (the same settings on the same "
                          "data); wait for it to finish, or give this run another name.") from None
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _check_writable(models_dir: Path) -> None:
    """A models folder the run could not be registered in is refused at the start, with a plain message."""
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        probe = models_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        raise MedclfError(f"The models folder {models_dir.name or models_dir} cannot be written to, so a trained "
                          "model could not be saved there: choose another folder (--models-dir or "
                          "MEDCLF_MODELS_DIR).") from None
