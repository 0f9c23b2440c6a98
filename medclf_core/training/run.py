"""The training job: validate, scan and split the data, hold the run's work folder, fit, evaluate, register.

Training state lives in a work folder ``models/.work/<key>/`` whose key hashes the
configuration and the dataset fingerprint (:func:`work_key`); one process at a time
holds it (:func:`_work_lock`). If the process is killed, running the same command
again resumes from the last completed epoch. A cancel stops within one batch, removes
the work folder, and registers nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from medclf_core.models.architectures import get_architecture
from medclf_core.data.dataset import audit_dataset, release_dataset, scan_dataset, split_counts, split_dataset
from medclf_core.training.devices import plan_devices
from medclf_core.models.ensemble import count_members, merge_members
from medclf_core.errors import (TRAINING_OUT_OF_MEMORY, DatasetError, MedclfError, TrainingCancelled, brief,
                                is_out_of_memory)
from medclf_core.training.events import EventLog
from medclf_core.data.pipeline import make_dataset
from medclf_core.registry.store import (CARD_FILE, EVALUATION_FILE, HISTORY_FILE, MODEL_FILE, default_models_dir,
                                  load_run, unique_run_name, write_json, write_run_atomically)
from medclf_core.training.config import TrainConfig
from medclf_core.training.fitting import FitContext, class_weight_for, fit_member, for_strategy, labels_of

OUT_OF_MEMORY = TRAINING_OUT_OF_MEMORY


def train(cfg: TrainConfig, *, models_dir: str | os.PathLike | None = None, events: EventLog | None = None,
          cancel: Callable[[], bool] | None = None) -> Path:
    """Run one training job end to end and return its registry folder.

    Raises :class:`TrainingCancelled` when cancelled, :class:`MedclfError` with a
    plain message for bad input (no images in a class, unknown architecture, ...).
    Events are emitted on ``events`` (see :mod:`medclf_core.training.events`), ending with
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
    except Exception as exc:
        if is_out_of_memory(exc):
            log.emit("error", message=OUT_OF_MEMORY)
            raise MedclfError(OUT_OF_MEMORY) from None
        log.emit("error", message=f"Training failed unexpectedly ({brief(exc)}).")
        raise


def _train(cfg: TrainConfig, models_dir: Path, log: EventLog, cancel) -> Path:
    started = time.time()
    cfg.validate(models_dir)
    # Devices first: a MultiWorkerMirroredStrategy and logical CPU devices must exist before TF runs anything.
    try:
        plan = plan_devices(cfg.mixed_precision, xla=cfg.xla, memory_growth=cfg.memory_growth,
                            distribute=cfg.distribute, logical_devices=cfg.logical_devices)
    except ValueError as exc:
        raise MedclfError(str(exc)) from None
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
    log.emit("start", config=asdict(cfg))

    # --- data
    index = scan_dataset(cfg.data)
    try:
        return _train_on(cfg, models_dir, log, cancel, index, started, plan, init_model, init_card)
    finally:
        release_dataset(index)  # a zip's temporary extraction


def _train_on(cfg, models_dir: Path, log: EventLog, cancel, index, started: float, plan, init_model,
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
            return _fit_evaluate_register(cfg, models_dir, log, cancel, index, report, splits, counts, work,
                                          init_model, init_card, started, plan)
        except TrainingCancelled:
            _remove_work(work)
            raise


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


def _fit_evaluate_register(cfg, models_dir, log, cancel, index, report, splits, counts, work, init_model, init_card,
                           started, plan) -> Path:
    import keras

    from medclf_core.training.card import build_card
    from medclf_core.training.evaluate import evaluate_run

    class_names = index.class_names
    spec = get_architecture(cfg.arch)
    # global batch = per-device batch x replicas (all workers); learning rate scaled linearly (Goyal et al.)
    global_batch = cfg.batch_size * plan.replicas
    log.emit("devices", **plan.info(), global_batch_size=global_batch, learning_rate=cfg.learning_rate * plan.replicas)

    augment = cfg.augment_config(class_names, index.name)
    tta = cfg.check_views(augment)  # "auto" augmentation: its flips are known only now
    common = dict(image_size=cfg.image_size, channels=cfg.channels, batch_size=global_batch, seed=cfg.seed)
    val_ds = for_strategy(make_dataset([it.path for it in splits["val"]], labels_of(splits["val"]),
                                       training=False, cache=cfg.cache, **common), plan)
    class_weight = class_weight_for(labels_of(splits["train"]).tolist(), len(class_names), cfg.class_weights)
    if class_weight:
        log.emit("notice", message="Class weights: " + ", ".join(f"{class_names[k]} {v:.2f}" for k, v in class_weight.items()))

    members = cfg.ensemble
    # Fine-tuning an ensemble (always with as many members): member k starts from the earlier run's member k.
    # Otherwise every member starts from the earlier single model: keep its weights before member 1 trains it.
    split_init = init_model is not None and count_members(init_model) > 1
    init_weights = init_model.get_weights() if init_model is not None and members > 1 and not split_init else None
    ctx = FitContext(cfg, spec, plan, log, cancel, splits, class_names, augment, val_ds, class_weight, work,
                     init_model, init_card, init_weights, split_init, seed=cfg.seed, members=members)
    trained = []
    for k in range(1, members + 1):
        if members > 1:
            log.emit("member", member=k, members=members, seed=cfg.seed + k - 1)
        member_work = work if members == 1 else work / f"member-{k}"
        member_work.mkdir(parents=True, exist_ok=True)
        trained.append(fit_member(ctx.for_member(k, member_work)))
    if cancel is not None and cancel():
        raise TrainingCancelled("Training was cancelled.")
    if members == 1:
        model = trained[0].model
        history = trained[0].history
    else:
        log.emit("notice", message=f"Merging {members} members into one model (mean of their logits).")
        model = merge_members([t.model for t in trained], name=f"{cfg.arch}_ensemble{members}")
        history = [{**h, "member": t.member} for t in trained for h in t.history]

    ev = evaluate_run(ctx, model, trained, tta, common)
    name = cfg.name or unique_run_name(f"{index.name}-{cfg.arch}", models_dir)
    card = build_card(ctx, trained, ev, name=name, index=index, report=report, counts=counts, history=history,
                      started=started).to_dict()

    def write(folder: Path) -> None:
        # An uncompiled view of the same layers: the file holds no optimizer state (3x smaller).
        keras.Model(model.inputs, model.outputs, name=model.name).save(folder / MODEL_FILE)
        write_json(folder / CARD_FILE, card)
        ev.gate.save(folder)
        write_json(folder / HISTORY_FILE, history)
        write_json(folder / EVALUATION_FILE, {"split": ev.eval_split, "test": ev.test_metrics, "val": ev.val_metrics,
                                              "predictions": ev.predictions})

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
