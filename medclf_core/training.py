"""Train, evaluate and register one run: the engine behind ``medclf_core train`` and the Train page.

:func:`train` does, in order: scan and audit the dataset, split it without leaks,
build the model (or start from an earlier run), fit with Adam and cross-entropy
(class weights when classes are imbalanced), choose the operating threshold on the
validation split, evaluate on the test split, and write the run into the registry
atomically.

Training state lives in a work folder ``models/.work/<key>/`` whose key hashes the
configuration and the dataset fingerprint. If the process is killed, running the
same command again resumes from the last completed epoch (Keras
``BackupAndRestore``). A cancel (``cancel()`` returning True, checked after every
batch) stops within one batch, removes the work folder, and registers nothing.

Example::

    >>> cfg = TrainConfig(data="samples/datasets/chest_xray", arch="simple_cnn", epochs=2, image_size=64)
    >>> run_dir = train(cfg, models_dir="models")        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medclf_core import __version__
from medclf_core.architectures import RECIPES, build_model, get_architecture, set_trainable_from
from medclf_core.augment import AugmentConfig
from medclf_core.card import CARD_SCHEMA_VERSION, ModelCard
from medclf_core.data import audit_dataset, release_dataset, scan_dataset, split_counts, split_dataset
from medclf_core.devices import DevicePlan, gather_min, plan_devices, precision_policy
from medclf_core.ensemble import (check_members, count_members, member_layer_names, member_prefix, merge_members,
                                  split_member)
from medclf_core.errors import DatasetError, MedclfError, TrainingCancelled
from medclf_core.calibration import apply_temperature, fit_temperature
from medclf_core.evaluation import THRESHOLD_RULES, choose_threshold, evaluate_probabilities, positive_class_index
from medclf_core.ood import fit_gate
from medclf_core.trust import calibration_entry, features_and_probabilities
from medclf_core.events import EventLog
from medclf_core.pipeline import make_dataset
from medclf_core.tta import check_views, tf_view
from medclf_core.registry import (CARD_FILE, EVALUATION_FILE, HISTORY_FILE, MODEL_FILE, check_run_name,
                                  default_models_dir, load_run, unique_run_name, write_json, write_run_atomically)

CHEST_HINTS = ("chest", "xray", "x-ray", "cxr", "pneumonia")


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means "the architecture's default"."""

    data: str
    arch: str = "simple_cnn"
    name: str | None = None
    task: str | None = None
    epochs: int | None = None
    image_size: int | None = None
    channels: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    val_split: float = 0.15
    test_split: float = 0.15
    seed: int = 1337
    augment: str | dict = "auto"          # preset name ("auto", "default", "chest_xray", "brain_mri", "none") or dict
    class_weights: str = "auto"           # auto (when imbalanced) | on | off
    patience: int = 8                     # early-stopping patience (epochs without val-loss improvement)
    lr_patience: int = 3                  # ReduceLROnPlateau patience
    threshold_method: str = "balanced"    # balanced (bootstrap-median Youden) | youden | sensitivity
    target_sensitivity: float = 0.95
    init_from: str | None = None          # an earlier run to start from (fine-tuning)
    weights: str | None = "imagenet"      # pretrained architectures: "imagenet", a local weights file, or None
    recipe: str = "auto"                  # auto (transfer when the backbone is pretrained) | transfer | scratch
    feature_views: int = 2                # transfer: random augmented views of each training image, cached
    fine_tune_epochs: int | None = None   # pretrained: epochs on images with the top blocks unfrozen (BN frozen)
    fine_tune_learning_rate: float | None = None
    mixed_precision: str = "auto"         # auto (GPU only) | on | off | float16 | bfloat16
    xla: str = "auto"                     # auto (Keras: one GPU, all layers XLA-able) | on | off
    memory_growth: bool = True            # GPU memory allocated as needed, not all up front
    distribute: str = "auto"              # auto: all local GPUs (Mirrored), TF_CONFIG cluster (MultiWorker) | off
    logical_devices: int | None = None    # split the CPU into N devices and mirror over them (tests, bench)
    near_duplicate_distance: int = 8
    group_pattern: str | None = None      # regex on file names: one patient's images stay in one split
    cache: bool = True
    model_options: dict = field(default_factory=dict)  # extra factory options (dense_units, dropout, ...)
    freeze_batchnorm: bool = False        # BatchNorm in inference mode: keep init_from's statistics (small data)
    tta: list = field(default_factory=list)  # test-time views averaged at validation and prediction ("hflip")
    ensemble: int = 1                     # models trained with seeds seed, seed+1, ... on one split, merged into one
    intended_use: dict | None = None      # the card's intended use: summary, DICOM modalities, body parts, ...
    training_data: str | None = None      # the card's description of where the training images come from

    def resolved(self) -> TrainConfig:
        """A copy with architecture defaults filled in."""
        spec = get_architecture(self.arch)
        d = asdict(self)
        for key in ("epochs", "image_size", "channels", "batch_size", "learning_rate"):
            if d[key] is None:
                d[key] = spec.defaults[key]
        for key in ("fine_tune_epochs", "fine_tune_learning_rate"):
            if d[key] is None:
                d[key] = spec.defaults.get(key, 0 if key == "fine_tune_epochs" else None)
        return TrainConfig(**d)

    def augment_config(self, class_names: list[str], dataset_name: str) -> AugmentConfig:
        if isinstance(self.augment, dict):
            return AugmentConfig.from_dict(self.augment)
        preset = self.augment
        if preset == "auto":
            text = " ".join([dataset_name, *class_names, self.task or ""]).lower()
            preset = "chest_xray" if any(h in text for h in CHEST_HINTS) else "default"
        return AugmentConfig.preset(preset)


# ---------------------------------------------------------------------------- callbacks

def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


class _Progress(_keras_callback_base()):
    """Emits batch/epoch events with ETA, keeps history across resumes, honours cancel."""

    def __init__(self, log: EventLog, epochs: int, steps: int, history_path: Path,
                 cancel: Callable[[], bool] | None, phase: str, batch_interval_s: float = 0.5,
                 n_train: int = 0, member: int = 1, members: int = 1):
        super().__init__()
        self.log, self.epochs, self.steps, self.n_train = log, epochs, steps, n_train
        # ensemble members train one after the other: events say which, ETAs include the members to come
        self.member_info = {"member": member, "members": members} if members > 1 else {}
        self.later_members = members - member
        self.history_path, self.cancel, self.phase = history_path, cancel, phase
        self.batch_interval_s = batch_interval_s
        self.history: list[dict] = json.loads(history_path.read_text()) if history_path.is_file() else []
        self._first_epoch: int | None = None
        self._epoch_times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
            self.history = [h for h in self.history if h["epoch"] < epoch]
            if epoch > 0 and self.phase == "train":
                self.log.emit("resumed", epoch=epoch + 1, epochs=self.epochs)
        self._epoch, self._t0, self._last = epoch, time.time(), 0.0
        self._t_train_end = None
        self.log.emit("epoch_begin", epoch=epoch + 1, epochs=self.epochs, phase=self.phase, **self.member_info)

    def on_train_batch_end(self, batch, logs=None):
        if self.cancel is not None and self.cancel():
            raise TrainingCancelled("Training was cancelled.")
        now = time.time()
        self._t_train_end = now
        if now - self._last >= self.batch_interval_s or batch + 1 == self.steps:
            self._last = now
            per_batch = (now - self._t0) / (batch + 1)
            remaining_epochs = self.epochs - self._epoch - 1
            epoch_s = np.median(self._epoch_times) if self._epoch_times else per_batch * self.steps
            eta = per_batch * (self.steps - batch - 1) + (remaining_epochs + self.later_members * self.epochs) * epoch_s
            self.log.emit("batch", epoch=self._epoch + 1, epochs=self.epochs, batch=batch + 1, batches=self.steps,
                          metrics=_clean(logs), eta_s=round(float(eta), 1), phase=self.phase, **self.member_info)

    def on_epoch_end(self, epoch, logs=None):
        took = time.time() - self._t0
        self._epoch_times.append(took)
        # training throughput: images of the whole train split (all workers) over the fit part of the epoch
        fit_s = (self._t_train_end or time.time()) - self._t0
        ips = round(self.n_train / fit_s, 1) if self.n_train and fit_s > 0 else None
        lr = self.model.optimizer.learning_rate
        record = {"epoch": epoch, **_clean(logs), "learning_rate": float(np.asarray(lr)), "seconds": round(took, 2),
                  "phase": self.phase, "images_per_s": ips}
        self.history.append(record)
        write_json(self.history_path, self.history)
        eta = (self.epochs - epoch - 1 + self.later_members * self.epochs) * float(np.median(self._epoch_times))
        self.log.emit("epoch", epoch=epoch + 1, epochs=self.epochs, metrics=_clean(logs), seconds=round(took, 2),
                      eta_s=round(eta, 1), phase=self.phase, images_per_s=ips, **self.member_info)


class _BestCheckpoint(_keras_callback_base()):
    """Saves weights when val_loss improves; remembers the best across resumes (unlike ModelCheckpoint)."""

    def __init__(self, work: Path):
        super().__init__()
        self.weights_path = work / "best.weights.h5"
        self.state_path = work / "best.json"
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.best = state.get("val_loss", np.inf)
        self.best_epoch = state.get("epoch")

    def on_epoch_end(self, epoch, logs=None):
        val = (logs or {}).get("val_loss")
        if val is not None and np.isfinite(val) and val < self.best:
            self.record(self.model, val, epoch)

    def record(self, model, val_loss: float | None, epoch: int) -> None:
        """Save ``model``'s weights as the best so far (the transfer recipe calls this after its head)."""
        self.best, self.best_epoch = (float(val_loss) if val_loss is not None else np.inf), epoch
        tmp = self.weights_path.with_name(".tmp.best.weights.h5")
        model.save_weights(tmp)
        os.replace(tmp, self.weights_path)
        write_json(self.state_path, {"val_loss": val_loss, "epoch": epoch})


def _synced_backup(backup_dir: Path, multi_worker: bool):
    """Keras ``BackupAndRestore``; with several workers, all of them resume from the same epoch.

    Every worker backs up into its own folder (Keras 3 writes from every worker). A
    worker killed between the end of an epoch and its backup write can be one epoch
    behind the others, so with several workers the previous state is kept too, and
    at restore time the workers agree on the oldest epoch any of them holds (a
    collective all-gather) and roll back to it. Weights are identical on every
    worker at the end of an epoch (synchronous training), so this is exact.
    """
    import keras

    class SyncedBackupAndRestore(keras.callbacks.BackupAndRestore):
        def _load_model(self):
            if multi_worker:
                self._agree_on_epoch()
            super()._load_model()

        def _agree_on_epoch(self):
            local = _backup_epoch(self._training_metadata_path, self._weights_path)
            agreed = gather_min(self.model.distribute_strategy, local)
            if agreed == local:
                return
            prev = _backup_epoch(self._prev_training_metadata_path, self._prev_weights_path)
            if agreed > 0 and prev == agreed:
                shutil.copyfile(self._prev_weights_path, self._weights_path)
                shutil.copyfile(self._prev_training_metadata_path, self._training_metadata_path)
            else:  # nothing common: every worker starts over
                for f in (self._weights_path, self._training_metadata_path, self._prev_weights_path,
                          self._prev_training_metadata_path):
                    with contextlib.suppress(OSError):
                        os.remove(f)

    return SyncedBackupAndRestore(str(backup_dir), double_checkpoint=multi_worker)


def _backup_epoch(metadata_path, weights_path) -> int:
    try:
        if not os.path.isfile(weights_path):
            return 0
        with open(metadata_path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _clean(logs) -> dict:
    return {k: round(float(v), 6) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0}


# ---------------------------------------------------------------------------- helpers

def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"medclf": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "numpy": np.__version__}


def class_weight_for(labels: list[int], n_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced class weights (n / (k * count)) when ``mode`` is on, or auto and imbalanced (>= 1.5:1)."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    if mode == "off" or counts.min() == 0:
        return None
    if mode == "auto" and counts.max() / counts.min() < 1.5:
        return None
    weights = counts.sum() / (n_classes * counts)
    return {i: float(w) for i, w in enumerate(weights)}


def work_key(cfg: TrainConfig, fingerprint: str) -> str:
    """The work folder of a run: its settings (name included: two named runs never share one) and its data."""
    d = asdict(cfg)
    d["data"] = str(Path(cfg.data).resolve())
    return hashlib.sha256(json.dumps([d, fingerprint], sort_keys=True, default=str).encode()).hexdigest()[:16]


def predict_probabilities(model, ds, views: tuple[str, ...] = ()) -> np.ndarray:
    """Class probabilities for a batched ``(x, y)`` dataset, averaged over the test-time ``views``."""
    probs = np.asarray(model.predict(ds, verbose=0), dtype=np.float64)
    for name in views:
        flipped = ds.map(lambda x, y, name=name: (tf_view(name, x), y))
        probs = probs + np.asarray(model.predict(flipped, verbose=0), dtype=np.float64)
    return probs / (1 + len(views))


def _train_features(model, trained: list, members: int, splits, common: dict, log) -> np.ndarray:
    """Penultimate features of the train split (unaugmented) for the gate: the transfer recipe's cache, or a pass."""
    from medclf_core.transfer import head_options

    # the cache holds the feature layer's output, which is the classifier's input unless a dense layer sits between
    if members == 1 and trained[0].train_features is not None and not head_options(model)["dense_units"]:
        return trained[0].train_features
    log.emit("notice", message="Computing training-image features for the out-of-distribution gate.")
    ds = make_dataset([it.path for it in splits["train"]], _labels_of(splits["train"]), training=False, cache=False,
                      **common)
    return features_and_probabilities(model, ds)[0]


def _labels_of(items) -> np.ndarray:
    return np.array([it.label for it in items], dtype=int)


def _replace_head(model, num_classes: int):
    """Keep everything up to the classifier, put a fresh ``predictions`` layer on top."""
    import keras

    features = model.get_layer("predictions").input
    out = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(model.inputs, out, name=model.name)


# ---------------------------------------------------------------------------- train

def train(cfg: TrainConfig, *, models_dir: str | os.PathLike | None = None, events: EventLog | None = None,
          cancel: Callable[[], bool] | None = None) -> Path:
    """Run one training job end to end and return its registry folder.

    Raises :class:`TrainingCancelled` when cancelled, :class:`MedclfError` with a
    plain message for bad input (no images in a class, unknown architecture, ...).
    Events are emitted on ``events`` (see :mod:`medclf_core.events`), ending with
    ``done``, ``cancelled`` or ``error``.
    """
    log = events or EventLog()
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    try:
        return _train(cfg, models_dir, log, cancel)
    except TrainingCancelled:
        log.emit("cancelled", message="Training was cancelled; no model was saved.")
        raise
    except MedclfError as exc:
        log.emit("error", message=str(exc))
        raise
    except MemoryError:
        msg = "Training ran out of memory. Try a smaller batch size or image size."
        log.emit("error", message=msg)
        raise MedclfError(msg) from None
    except Exception as exc:
        text = str(exc)
        if "OOM" in text or "ResourceExhausted" in type(exc).__name__:
            msg = "Training ran out of (GPU) memory. Try a smaller batch size or image size."
            log.emit("error", message=msg)
            raise MedclfError(msg) from exc
        log.emit("error", message=f"Training failed: {type(exc).__name__}: {text[:500]}")
        raise


def _train(cfg: TrainConfig, models_dir: Path, log: EventLog, cancel) -> Path:
    started = time.time()
    # Devices first: a MultiWorkerMirroredStrategy and logical CPU devices must exist before TF runs anything.
    try:
        plan = plan_devices(cfg.mixed_precision, xla=cfg.xla, memory_growth=cfg.memory_growth,
                            distribute=cfg.distribute, logical_devices=cfg.logical_devices)
    except ValueError as exc:
        raise MedclfError(str(exc)) from None
    if cfg.name:
        check_run_name(cfg.name)
        if (models_dir / cfg.name).exists():
            raise MedclfError(f"A run named '{cfg.name}' already exists; choose another name.")
    _check_writable(models_dir)  # before the training, not after it
    init_card = None
    init_model = None
    if cfg.init_from:
        init_model, init_card = load_run(cfg.init_from, models_dir)
        shape = init_card["input_shape"]
        cfg = TrainConfig(**{**asdict(cfg), "arch": init_card["architecture"], "image_size": shape[0],
                             "channels": shape[2]})
        init_members = count_members(init_model)
        if init_members > 1 and cfg.ensemble != init_members:
            # One model per earlier member keeps the card, the heat-map layers and the cost honest.
            raise MedclfError(f"'{init_card['name']}' is an ensemble of {init_members} models: fine-tune it with "
                              f"ensemble {init_members} (each new model starts from the matching one).")
    cfg = cfg.resolved()
    spec = get_architecture(cfg.arch)
    try:
        check_views(cfg.tta)
    except ValueError as exc:
        raise MedclfError(str(exc)) from None
    try:
        check_members(cfg.ensemble)
    except ValueError as exc:
        raise MedclfError(str(exc)) from None
    if cfg.recipe not in RECIPES:
        raise MedclfError(f"Unknown recipe '{cfg.recipe}'; choose from {', '.join(RECIPES)}.")
    transfer = cfg.recipe == "transfer" or (cfg.recipe == "auto" and spec.is_pretrained and not cfg.init_from
                                            and cfg.weights not in (None, "", "none"))
    if transfer and cfg.ensemble > 1:
        raise MedclfError("The transfer recipe trains one head on one frozen backbone; an ensemble of identical "
                          "backbones adds nothing. Use ensemble 1.")
    if cfg.freeze_batchnorm and not cfg.init_from and not spec.is_pretrained:
        raise MedclfError("freeze_batchnorm keeps the BatchNorm statistics of a trained model: use it with "
                          "init_from (or ResNet-50's ImageNet weights), not on a model trained from scratch.")
    log.emit("start", config=asdict(cfg))

    # --- data
    index = scan_dataset(cfg.data)
    try:
        return _train_on(cfg, spec, models_dir, log, cancel, index, started, plan, init_model, init_card)
    finally:
        release_dataset(index)  # a zip's temporary extraction


def _train_on(cfg, spec, models_dir: Path, log: EventLog, cancel, index, started: float, plan, init_model,
              init_card) -> Path:
    report = audit_dataset(index, near_duplicate_distance=cfg.near_duplicate_distance,
                           progress=lambda i, t: log.emit("audit_progress", done=i, total=t) if i % 200 == 0 or i == t else None)
    log.emit("audit", counts=report.counts, warnings=report.warnings(), unreadable=len(report.unreadable),
             duplicate_groups=len(report.duplicate_groups), near_duplicate_groups=len(report.near_duplicate_groups))
    splits = split_dataset(index, report, val_fraction=cfg.val_split, test_fraction=cfg.test_split, seed=cfg.seed,
                           group_pattern=cfg.group_pattern)
    if not splits["val"]:
        raise DatasetError("The validation split is empty: use a larger dataset or a larger --val-split.")
    counts = split_counts(splits, index.class_names)
    log.emit("split", counts=counts)

    # --- work folder (resume state)
    key = work_key(cfg, report.fingerprint)
    if plan.cluster is not None:  # workers may share a file system: one work folder each
        key = f"{key}-{plan.cluster.task_id}"
    work = models_dir / ".work" / key
    work.mkdir(parents=True, exist_ok=True)
    with _work_lock(work):
        write_json(work / "config.json", asdict(cfg))
        try:
            return _fit_evaluate_register(cfg, spec, models_dir, log, cancel, index, report, splits, counts,
                                          work, init_model, init_card, started, plan)
        except TrainingCancelled:
            _remove_work(work)
            raise


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


def _fit_evaluate_register(cfg, spec, models_dir, log, cancel, index, report, splits, counts, work,
                           init_model, init_card, started, plan: DevicePlan) -> Path:
    import keras

    class_names = index.class_names
    n_classes = len(class_names)
    # global batch = per-device batch x replicas (all workers); learning rate scaled linearly (Goyal et al.)
    global_batch = cfg.batch_size * plan.replicas
    lr = cfg.learning_rate * plan.replicas
    log.emit("devices", **plan.info(), global_batch_size=global_batch, learning_rate=lr)

    augment = cfg.augment_config(class_names, index.name)
    try:
        tta = check_views(cfg.tta, horizontal_flip_trained=augment.horizontal_flip)
    except ValueError as exc:
        raise MedclfError(str(exc)) from None
    common = dict(image_size=cfg.image_size, channels=cfg.channels, batch_size=global_batch, seed=cfg.seed)
    val_ds = _for_strategy(make_dataset([it.path for it in splits["val"]], _labels_of(splits["val"]),
                                        training=False, cache=cfg.cache, **common), plan)
    class_weight = class_weight_for(_labels_of(splits["train"]).tolist(), n_classes, cfg.class_weights)
    if class_weight:
        log.emit("notice", message="Class weights: " + ", ".join(f"{class_names[k]} {v:.2f}" for k, v in class_weight.items()))

    members = cfg.ensemble
    # Fine-tuning an ensemble (always with as many members): member k starts from the earlier run's member k.
    # Otherwise every member starts from the earlier single model: keep its weights before member 1 trains it.
    split_init = init_model is not None and count_members(init_model) > 1
    init_weights = init_model.get_weights() if init_model is not None and members > 1 and not split_init else None
    trained = []
    for k in range(members):
        if members > 1:
            log.emit("member", member=k + 1, members=members, seed=cfg.seed + k)
        member_work = work if members == 1 else work / f"member-{k + 1}"
        member_work.mkdir(parents=True, exist_ok=True)
        trained.append(_fit_member(cfg, spec, plan, log, cancel, splits, class_names, augment, val_ds,
                                   class_weight, member_work, init_model, init_card, init_weights,
                                   seed=cfg.seed + k, member=k + 1, members=members, split_init=split_init))
    if cancel is not None and cancel():
        raise TrainingCancelled("Training was cancelled.")
    pretrained, xla_used = trained[0].pretrained, trained[0].xla_used
    if members == 1:
        model = trained[0].model
        history = trained[0].history
    else:
        log.emit("notice", message=f"Merging {members} members into one model (mean of their logits).")
        model = merge_members([t.model for t in trained], name=f"{cfg.arch}_ensemble{members}")
        history = [{**h, "member": t.member} for t in trained for h in t.history]
    positive = positive_class_index(class_names)
    member_validation = None
    if members > 1:
        member_validation = []
        for t in trained:
            probs = predict_probabilities(t.model, val_ds, tta)
            m = evaluate_probabilities(_labels_of(splits["val"]), probs, class_names, threshold=None,
                                       positive=positive, seed=cfg.seed, bootstrap=0)
            member_validation.append({"member": t.member, "seed": t.seed, "accuracy": m.get("accuracy"),
                                      "auc": m.get("auc"), "epochs_run": len(t.history),
                                      "best_epoch": t.best_epoch, "best_val_loss": t.best_val_loss})

    # --- threshold on validation, metrics on test (or validation when there is no test split)
    log.emit("evaluate", split="val")
    y_val = _labels_of(splits["val"])
    # One forward pass gives the validation probabilities and the features the out-of-distribution gate needs.
    val_features, raw_val_probs = features_and_probabilities(model, val_ds, tta)
    gate = fit_gate(_train_features(model, trained, members, splits, common, log), _labels_of(splits["train"]),
                    val_features)
    log.emit("notice", message=f"Out-of-distribution gate: {gate.rule}; flags "
                               f"{gate.val_fraction_flagged:.1%} of the validation images.")
    # Temperature scaling on validation; the threshold and every reported figure use calibrated probabilities.
    temperature = fit_temperature(y_val, raw_val_probs)
    val_probs = apply_temperature(raw_val_probs, temperature, positive=positive)
    threshold = None
    if n_classes == 2:
        threshold = choose_threshold(y_val, val_probs, positive, cfg.threshold_method, cfg.target_sensitivity,
                                     seed=cfg.seed)
    val_metrics = evaluate_probabilities(_labels_of(splits["val"]), val_probs, class_names, threshold=threshold,
                                         positive=positive, seed=cfg.seed)
    eval_split = "test" if splits["test"] else "val"
    if splits["test"]:
        log.emit("evaluate", split="test")
        test_ds = make_dataset([it.path for it in splits["test"]], _labels_of(splits["test"]), training=False,
                               cache=False, **common)
        test_probs = apply_temperature(predict_probabilities(model, test_ds, tta), temperature, positive=positive)
        test_metrics = evaluate_probabilities(_labels_of(splits["test"]), test_probs, class_names,
                                              threshold=threshold, positive=positive, seed=cfg.seed)
        predictions = [{"file": it.rel, "label": class_names[it.label], "probabilities": p.round(6).tolist()}
                       for it, p in zip(splits["test"], test_probs, strict=True)]
    else:
        test_metrics = val_metrics
        predictions = [{"file": it.rel, "label": class_names[it.label], "probabilities": p.round(6).tolist()}
                       for it, p in zip(splits["val"], val_probs, strict=True)]

    name = cfg.name or unique_run_name(f"{index.name}-{cfg.arch}", models_dir)
    card = {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": name,
        "intended_use": cfg.intended_use,
        "training_data": cfg.training_data,
        "task": cfg.task or index.name,
        "class_names": class_names,
        "positive_class": class_names[positive] if positive is not None else None,
        "architecture": cfg.arch,
        "input_shape": [cfg.image_size, cfg.image_size, cfg.channels],
        "input_spec": {"dtype": "float32", "value_range": [0, 255],
                       "preprocessing": "decode by content, 8-bit, squash-resize to input_shape "
                                        "(OpenCV INTER_AREA down / INTER_LINEAR up); rescaling is inside the model",
                       "channels": "grayscale" if cfg.channels == 1 else "RGB"},
        "cam_layer": _cam_layer(trained[0].model, _base_cam_layer(init_card, spec, split_init), members),
        "tta": list(tta),
        "recipe": {"name": trained[0].recipe, "views": trained[0].views,
                   "fine_tune_epochs": cfg.fine_tune_epochs if pretrained else 0,
                   "fine_tune_from": spec.fine_tune_from if pretrained and cfg.fine_tune_epochs else None},
        "pretrained": ({"weights": "imagenet" if cfg.weights == "imagenet" else "file", "source": spec.pretrained,
                        "file": os.path.basename(trained[0].pretrained_source)} if pretrained else None),
        "ensemble": ({"members": members, "seeds": [t.seed for t in trained], "combination": "mean of logits",
                      "member_validation": member_validation} if members > 1 else None),
        "config": {**asdict(cfg), "augment_resolved": augment.to_dict(), "class_weight": class_weight,
                   "pretrained_weights": pretrained, "init_from": init_card["name"] if init_card else None},
        "dataset": {"source": str(cfg.data), "name": index.name, "fingerprint": report.fingerprint,
                    "layout": "presplit" if index.presplit else "class folders (split by medclf)",
                    "counts": counts, "split_seed": cfg.seed, "audit_warnings": report.warnings(),
                    "unreadable": len(report.unreadable)},
        "metrics": _summary(test_metrics, eval_split),
        "validation_metrics": _summary(val_metrics, "val"),
        "threshold": threshold,
        "threshold_method": cfg.threshold_method if threshold is not None else None,
        "threshold_rule": ({"method": cfg.threshold_method, "chosen_for": THRESHOLD_RULES[cfg.threshold_method],
                            "on": "validation split, calibrated probabilities",
                            "validation_sensitivity": val_metrics.get("sensitivity"),
                            "validation_specificity": val_metrics.get("specificity")}
                           if threshold is not None else None),
        "calibration": calibration_entry(temperature, y_val, raw_val_probs, threshold=threshold,
                                         stored_predictions="calibrated"),
        "ood": gate.summary(),
        "training": {"epochs_run": _per_member([len(t.history) for t in trained]),
                     "best_epoch": _per_member([t.best_epoch for t in trained]),
                     "best_val_loss": _per_member([t.best_val_loss for t in trained]),
                     "seconds": round(time.time() - started, 1), "devices": plan.describe(),
                     "global_batch_size": global_batch, "learning_rate": lr, "replicas": plan.replicas,
                     "workers": plan.num_workers, "strategy": plan.kind, "mixed_precision": plan.mixed_precision,
                     "xla": xla_used, "images_per_s": _typical_images_per_s(history)},
        "versions": _versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    card = ModelCard.from_dict(card).to_dict()  # the one card type: a card that would not read back fails here

    def write(folder: Path) -> None:
        # An uncompiled view of the same layers: the file holds no optimizer state (3x smaller).
        keras.Model(model.inputs, model.outputs, name=model.name).save(folder / MODEL_FILE)
        write_json(folder / CARD_FILE, card)
        gate.save(folder)
        write_json(folder / HISTORY_FILE, history)
        write_json(folder / EVALUATION_FILE, {"split": eval_split, "test": test_metrics, "val": val_metrics,
                                              "predictions": predictions})

    if cancel is not None and cancel():  # a cancel during the final evaluation still registers nothing
        raise TrainingCancelled("Training was cancelled.")
    if not plan.is_chief:  # only the chief registers; the others took part in training
        _remove_work(work)
        log.emit("done", run_dir=str(models_dir / name), name=name, metrics=card["metrics"], registered=False,
                 message=f"{plan.cluster.task_id} finished; the chief registers the run.")
        return models_dir / name
    run_dir = write_run_atomically(models_dir, name, write)
    _remove_work(work)
    log.emit("done", run_dir=str(run_dir), name=name, metrics=card["metrics"])
    return run_dir


@dataclass
class _Member:
    model: object
    history: list
    member: int
    seed: int
    best_epoch: int | None
    best_val_loss: float | None
    pretrained: bool
    xla_used: bool
    train_features: np.ndarray | None = None  # penultimate features of the train split, when still valid
    recipe: str = "scratch"
    views: list | None = None                 # transfer: the training views whose features were cached
    pretrained_source: str | None = None


def _fit_member(cfg, spec, plan: DevicePlan, log, cancel, splits, class_names, augment, val_ds, class_weight,
                work: Path, init_model, init_card, init_weights, *, seed: int, member: int, members: int,
                split_init: bool = False) -> _Member:
    """Build (or take over ``init_model``), fit and restore the best epoch of one model.

    Member ``k`` of an ensemble uses ``seed = cfg.seed + k - 1`` for its initialisation,
    shuffling and augmentation; the split is the same for every member. A finished
    member's weights stay in its work folder, so a resumed run does not retrain it.
    """
    import keras

    n_classes = len(class_names)
    keras.utils.set_random_seed(seed)
    global_batch = cfg.batch_size * plan.replicas
    lr = cfg.learning_rate * plan.replicas
    train_ds = _for_strategy(make_dataset([it.path for it in splits["train"]], _labels_of(splits["train"]),
                                          training=True, augment=augment, cache=cfg.cache, image_size=cfg.image_size,
                                          channels=cfg.channels, batch_size=global_batch, seed=seed), plan)
    steps = int(np.ceil(len(splits["train"]) / global_batch))

    pretrained, pretrained_source = False, None
    with precision_policy(plan.mixed_precision), plan.strategy.scope():
        if init_model is not None:
            if split_init:
                model = split_member(init_model, member, name=init_card["architecture"])
            elif plan.distributed or member > 1:  # own variables: under the strategy, or one copy per member
                model = keras.models.clone_model(init_model)
                model.set_weights(init_weights if init_weights is not None else init_model.get_weights())
            else:
                model = init_model
            if init_card["class_names"] != class_names:
                model = _replace_head(model, n_classes)
        else:
            options = {k: v for k, v in {**spec.defaults, **cfg.model_options}.items()
                       if k not in ("image_size", "channels", "batch_size", "learning_rate", "epochs")}
            options["weights"] = cfg.weights  # build_model passes it only to factories that take weights
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = build_model(cfg.arch, n_classes, cfg.image_size, cfg.channels, **options)
            if member == 1:
                for w in caught:
                    log.emit("notice", message=str(w.message))
            pretrained_source = getattr(model, "pretrained", None)
            pretrained = bool(pretrained_source)
        if cfg.freeze_batchnorm:
            # A frozen BatchNormalization layer runs in inference mode (Keras >= 2.1 semantics): its
            # statistics stay those of the larger dataset the model came from instead of following
            # small, augmented batches, which makes validation swing between epochs.
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=plan.xla)
        if plan.kind == "multi_worker":
            _fix_symbolic_build_for_multi_worker(model)
    xla_used = bool(model.jit_compile)  # what Keras resolved "auto" to (or fell back to: a layer without XLA)

    history_path = work / "history.json"
    best = _BestCheckpoint(work)
    finished = work / "member.done"
    train_features, views = None, None
    recipe = _recipe(cfg, pretrained)
    if finished.is_file() and best.weights_path.is_file():
        log.emit("notice", message=f"Member {member} of {members} was already trained; resuming after it.")
    else:
        if recipe == "transfer":
            train_features, views = _fit_transfer_head(model, cfg, spec, log, cancel, splits, augment, class_weight,
                                                       history_path, best, seed)
        else:
            _fit_images(model, cfg, plan, log, cancel, train_ds, val_ds, class_weight, steps, history_path, best,
                        work, len(splits["train"]), member, members)
        if pretrained and cfg.fine_tune_epochs:
            _fine_tune(model, cfg, spec, plan, log, cancel, train_ds, val_ds, class_weight, steps, history_path,
                       best, work, len(splits["train"]), member, members)
            train_features = None  # the backbone changed: cached features no longer describe it
        if members > 1:
            finished.write_text("done\n")

    if plan.distributed:
        # Evaluate and save an ordinary single-device copy: every worker predicts the same full splits
        # (no cross-worker gathers), and nothing after this point is a collective op.
        model = _plain_copy(model)
    if best.weights_path.is_file():
        model.load_weights(best.weights_path)  # the best validation-loss epoch, as EarlyStopping(restore) would
    history = json.loads(history_path.read_text()) if history_path.is_file() else []
    return _Member(model, history, member, seed, (best.best_epoch + 1) if best.best_epoch is not None else None,
                   best.best if np.isfinite(best.best) else None, pretrained, xla_used, train_features, recipe, views,
                   str(pretrained_source) if pretrained else None)


def _recipe(cfg, pretrained: bool) -> str:
    """``transfer`` (head on cached features) or ``scratch`` (fit on images), resolving ``auto``."""
    if cfg.recipe == "transfer" and not pretrained:
        raise MedclfError("The transfer recipe needs a pretrained backbone (an architecture with ImageNet weights, "
                          "weights not 'none').")
    if cfg.recipe == "auto":
        return "transfer" if pretrained and not cfg.init_from else "scratch"
    return cfg.recipe


def _callbacks(cfg, plan, log, cancel, phase: str, epochs: int, steps: int, history_path, best, work, backup: str,
               n_train: int, member: int, members: int) -> list:
    import keras

    return [
        _synced_backup(work / backup, plan.kind == "multi_worker"),
        _Progress(log, epochs, steps, history_path, cancel, phase, n_train=n_train, member=member, members=members),
        best,
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=cfg.lr_patience,
                                          min_lr=1e-6, verbose=0),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=False),
    ]


def _fit_images(model, cfg, plan, log, cancel, train_ds, val_ds, class_weight, steps, history_path, best, work,
                n_train, member, members) -> None:
    """``model.fit`` on images with progress, checkpoints, learning-rate decay and early stopping."""
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, class_weight=class_weight,
              callbacks=_callbacks(cfg, plan, log, cancel, "train", cfg.epochs, steps, history_path, best, work,
                                   "backup", n_train, member, members), shuffle=False, verbose=0)


def _fit_transfer_head(model, cfg, spec, log, cancel, splits, augment, class_weight, history_path, best,
                       seed: int) -> tuple[np.ndarray, list[str]]:
    """The transfer recipe's first phase: backbone features cached once, the head fitted on them.

    Returns the train split's features (unaugmented view), which the out-of-distribution gate
    reuses, and the names of the cached views.
    """
    from medclf_core.transfer import (cache_features, copy_head, feature_extractor, fit_head, head_options,
                                      view_names)

    extractor = feature_extractor(model, spec.feature_layer)
    views = view_names(cfg.feature_views if augment.enabled else 0, augment.horizontal_flip)
    train_paths = [it.path for it in splits["train"]]
    val_paths = [it.path for it in splits["val"]]
    total_images = len(train_paths) * len(views) + len(val_paths)
    log.emit("epoch_begin", epoch=1, epochs=1, phase="features")
    log.emit("notice", message=f"Computing backbone features once: {len(train_paths)} training images x "
                               f"{len(views)} views ({', '.join(views)}) and {len(val_paths)} validation images.")
    started = time.time()
    batch = int(cfg.batch_size)
    train_batches = int(np.ceil(len(train_paths) / batch)) * len(views)
    batches = train_batches + int(np.ceil(len(val_paths) / batch))

    def progress(offset: int):
        def report(done: int, _total: int) -> None:
            done += offset
            eta = (time.time() - started) / done * (batches - done)
            log.emit("batch", epoch=1, epochs=1, batch=done, batches=batches, eta_s=round(eta, 1), phase="features")
        return report

    common = dict(image_size=cfg.image_size, channels=cfg.channels, batch_size=batch, cancel=cancel)
    train_f = cache_features(extractor, train_paths, views=views, augment=augment, seed=seed, progress=progress(0),
                             **common)
    val_f = cache_features(extractor, val_paths, progress=progress(train_batches), **common)[0]
    took = time.time() - started
    log.emit("notice", message=f"Backbone features: {total_images} images in {took:.0f} s "
                               f"({total_images / max(took, 1e-6):.0f} images/s).")
    y_train = np.tile(_labels_of(splits["train"]), len(views))
    x_train = train_f.reshape(-1, train_f.shape[-1])
    steps = int(np.ceil(len(x_train) / 64))
    head = fit_head(x_train, y_train, val_f, _labels_of(splits["val"]), num_classes=model.output_shape[-1],
                    epochs=cfg.epochs, learning_rate=cfg.learning_rate, **head_options(model),
                    class_weight=class_weight, patience=cfg.patience, seed=seed,
                    callbacks=[_Progress(log, cfg.epochs, steps, history_path, cancel, "train", n_train=len(x_train))])
    copy_head(head, model)
    best.record(model, head.best_val_loss, head.best_epoch - 1)
    return train_f[0], views


def _fine_tune(model, cfg, spec, plan, log, cancel, train_ds, val_ds, class_weight, steps, history_path, best, work,
               n_train, member, members) -> None:
    """Pretrained models: more epochs on images, the top blocks unfrozen, BatchNorm statistics frozen."""
    import keras

    if best.weights_path.is_file():
        model.load_weights(best.weights_path)
    set_trainable_from(model, spec.fine_tune_from)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference mode: ImageNet statistics, not those of small augmented batches
    ft_lr = cfg.fine_tune_learning_rate * plan.replicas
    with plan.strategy.scope():
        model.compile(optimizer=keras.optimizers.Adam(ft_lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=plan.xla)
    log.emit("phase", phase="fine_tune", epochs=cfg.fine_tune_epochs, learning_rate=ft_lr)
    model._initial_epoch = None
    start = len(json.loads(history_path.read_text())) if history_path.is_file() else cfg.epochs
    total = start + cfg.fine_tune_epochs
    model.fit(train_ds, validation_data=val_ds, epochs=total, initial_epoch=start, class_weight=class_weight,
              callbacks=_callbacks(cfg, plan, log, cancel, "fine_tune", total, steps, history_path, best, work,
                                   "backup_ft", n_train, member, members), shuffle=False, verbose=0)


def _for_strategy(ds, plan: DevicePlan):
    """Datasets built from file-path tensors cannot be sharded by file: shard by element (DATA) instead."""
    if not plan.distributed:
        return ds
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _fix_symbolic_build_for_multi_worker(model) -> None:
    """Work around Keras 3.15 + MultiWorkerMirroredStrategy: ``fit`` fails at its first step.

    ``TensorFlowTrainer._maybe_symbolic_build`` averages one sample batch with
    ``strategy.reduce("MEAN", (x, y, ...), axis=None)``; MultiWorkerMirroredStrategy's
    reduce accepts one value, not a tuple, and raises "Attempt to convert a value
    (PerReplica...) to a Tensor". The batch is only used for its shapes and dtypes, so
    this worker's own first replica batch does the same job without a cross-worker op.
    """
    import types

    import tensorflow as tf
    from keras.src import tree

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
    _fix_reduce_per_replica_for_multi_worker()


def _fix_reduce_per_replica_for_multi_worker() -> None:
    """Work around Keras 3.15 + MultiWorkerMirroredStrategy: the train step fails to trace.

    ``reduce_per_replica(..., reduction="auto")`` averages the step's outputs (scalar loss
    and metrics) with ``strategy.reduce("MEAN", v, axis=0)``, which is invalid for a
    0-d tensor ("Invalid reduction dimension 0 for input with 0 dimensions"). Averaging
    across replicas (``axis=None``) is the intended result. Patched only in processes
    that train with MultiWorkerMirroredStrategy; every other strategy keeps Keras' code.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_medclf_fixed", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._medclf_fixed = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _plain_copy(model):
    """The same layers and weights as an ordinary model, built outside any distribution strategy."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _typical_images_per_s(history: list[dict]) -> float | None:
    """Median training throughput over the epochs, leaving out the first (tracing, cache fill) when possible."""
    values = [h.get("images_per_s") for h in history if h.get("images_per_s")]
    if len(values) > 1:
        values = values[1:]
    return round(float(np.median(values)), 1) if values else None


def _per_member(values: list):
    """One value for a single model, the list for an ensemble (one per member)."""
    return values[0] if len(values) == 1 else values


def _base_cam_layer(init_card: dict | None, spec, split_init: bool) -> str | list[str]:
    """The heat-map layer of one member: the architecture's, the earlier run's, or its member 1's."""
    if init_card is None:
        return spec.cam_layer
    layer = init_card["cam_layer"]
    if split_init and isinstance(layer, list):
        return layer[0].removeprefix(member_prefix(1))
    return layer


def _cam_layer(model, layer: str | list[str], members: int) -> str | list[str]:
    """The card's ``cam_layer``: the architecture's layer, or each member's copy of it in an ensemble."""
    from medclf_core.explain import find_cam_layer

    layers = [find_cam_layer(model, layer)] if isinstance(layer, str) else list(layer)
    if members > 1:
        layers = [name for base in layers for name in member_layer_names(base, members)]
    return layers[0] if len(layers) == 1 else layers


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


def _remove_work(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):
        work.parent.rmdir()  # only if no other run is in progress


def _summary(m: dict, split: str) -> dict:
    keys = ("n", "accuracy", "balanced_accuracy", "macro_f1", "auc", "sensitivity", "specificity", "ci95")
    return {"split": split, **{k: m.get(k) for k in keys if k in m}}
