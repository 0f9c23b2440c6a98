"""The training job: one :class:`~medclf_core.training.session.TrainingSession` from settings to registered run.

:func:`train` opens the session (settings validated once, devices, models folder), scans,
audits and splits the data, holds the run's work folder, fits each model, evaluates, and
registers the run atomically. Training state lives in the work folder
``models/.work/<key>/`` (:func:`~medclf_core.training.session.work_key`); if the process is
killed, running the same command again resumes from the last completed epoch. A cancel
stops within one batch, removes the work folder, and registers nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from medclf_core.data.pipeline import make_dataset
from medclf_core.errors import TRAINING_OUT_OF_MEMORY, MedclfError, TrainingCancelled, brief, is_out_of_memory
from medclf_core.models.ensemble import count_members, merge_members
from medclf_core.io.atomic import write_json
from medclf_core.inference.overlap import training_image_hashes
from medclf_core.registry.store import (CARD_FILE, EVALUATION_FILE, HISTORY_FILE, MODEL_FILE, TRAINING_IMAGES_FILE,
                                        default_models_dir, unique_run_name, write_run_atomically)
from medclf_core.training.card import build_card
from medclf_core.training.config import TrainConfig
from medclf_core.training.evaluate import evaluate_run
from medclf_core.training.events import EventLog
from medclf_core.training.fitting import fit_member, for_strategy
from medclf_core.training.labels import class_weight_for, labels_of
from medclf_core.training.session import TrainingSession

OUT_OF_MEMORY = TRAINING_OUT_OF_MEMORY


def train(cfg: TrainConfig, *, models_dir: str | os.PathLike | None = None, events: EventLog | None = None,
          cancel: Callable[[], bool] | None = None) -> Path:
    """Run one training job end to end and return its registry folder.

    ``cfg`` is validated here unless :meth:`TrainConfig.validate` already passed it for this
    models folder. Raises :class:`TrainingCancelled` when cancelled, :class:`MedclfError` with a
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
    session = TrainingSession.open(cfg, models_dir, log, cancel)
    with session.dataset():
        session.audit_and_split()
        with session.work_folder():
            prepare_fit(session)
            fit_members(session)
            session.evaluation = evaluate_run(session)
            return register(session)


def prepare_fit(session: TrainingSession) -> None:
    """What every member's fit reads: augmentation, test-time views, validation data, class weights, init weights."""
    cfg, log, plan, class_names = session.cfg, session.log, session.plan, session.class_names
    # global batch = per-device batch x replicas (all workers); learning rate scaled linearly (Goyal et al.)
    log.emit("devices", **plan.info(), global_batch_size=session.global_batch,
             learning_rate=cfg.learning_rate * plan.replicas)
    session.augment = cfg.augment_config(class_names, session.index.name)
    session.tta = cfg.check_views(session.augment)  # "auto" augmentation: its flips are known only now
    val = session.splits["val"]
    session.val_ds = for_strategy(make_dataset([it.path for it in val], labels_of(val), training=False,
                                               cache=cfg.cache, **session.dataset_options), plan)
    session.class_weight = class_weight_for(labels_of(session.splits["train"]).tolist(), len(class_names),
                                            cfg.class_weights)
    if session.class_weight:
        log.emit("notice", message="Class weights: " + ", ".join(
            f"{class_names[k]} {v:.2f}" for k, v in session.class_weight.items()))
    # Fine-tuning an ensemble (always with as many members): member k starts from the earlier run's member k.
    # Otherwise every member starts from the earlier single model: keep its weights before member 1 trains it.
    init = session.init_model
    session.split_init = init is not None and count_members(init) > 1
    if init is not None and session.members > 1 and not session.split_init:
        session.init_weights = init.get_weights()


def fit_members(session: TrainingSession) -> None:
    """Fit every model of the run, one after the other; an ensemble's members are merged into one model."""
    members = session.members
    for k in range(1, members + 1):
        if members > 1:
            session.log.emit("member", member=k, members=members, seed=session.cfg.seed + k - 1)
        session.trained.append(fit_member(session, session.slot(k)))
    session.check_cancel()
    if members == 1:
        session.model, session.history = session.trained[0].model, session.trained[0].history
    else:
        session.log.emit("notice", message=f"Merging {members} members into one model (mean of their logits).")
        session.model = merge_members([t.model for t in session.trained],
                                      name=f"{session.cfg.arch}_ensemble{members}")
        session.history = [{**h, "member": t.member} for t in session.trained for h in t.history]


def write_fast_start_files(model, card: dict, folder: Path) -> None:
    """The run's LiteRT files beside its model.keras (:mod:`medclf_core.inference.lite_export`): the app then
    serves its first images without TensorFlow. A model that cannot be converted is registered without them."""
    from medclf_core.inference.lite_export import write_lite

    try:
        write_lite(model, card, folder)
    except Exception as exc:  # noqa: BLE001 - an optional artefact never stops a registration
        logging.getLogger(__name__).warning("Registered without the LiteRT fast path: %s", brief(exc))


def register(session: TrainingSession) -> Path:
    """Write the run into the registry atomically (the chief only) and emit ``done``; return its folder."""
    import keras

    models_dir, log, ev, model = session.models_dir, session.log, session.evaluation, session.model
    name = session.cfg.name or unique_run_name(f"{session.index.name}-{session.cfg.arch}", models_dir)
    card = build_card(session, name).to_dict()

    def write(folder: Path) -> None:
        # An uncompiled view of the same layers: the file holds no optimizer state (3x smaller).
        keras.Model(model.inputs, model.outputs, name=model.name).save(folder / MODEL_FILE)
        write_fast_start_files(model, card, folder)
        write_json(folder / CARD_FILE, card)
        ev.gate.save(folder)
        write_json(folder / HISTORY_FILE, session.history)
        write_json(folder / EVALUATION_FILE, {"split": ev.eval_split, "test": ev.test_metrics, "val": ev.val_metrics,
                                              "predictions": ev.predictions})
        # the pixel digests of its images (from the audit: no extra reading), for evaluations to say when they
        # score the model on its own training images (medclf_core.inference.overlap)
        write_json(folder / TRAINING_IMAGES_FILE, training_image_hashes(session.splits, session.report.hashes))

    session.check_cancel()  # a cancel during the final evaluation still registers nothing
    if not session.plan.is_chief:  # only the chief registers; the others took part in training
        session.remove_work()
        log.emit("done", run_dir=str(models_dir / name), name=name, metrics=card["metrics"], registered=False,
                 message=f"{session.plan.cluster.task_id} finished; the chief registers the run.")
        return models_dir / name
    run_dir = write_run_atomically(models_dir, name, write)
    session.remove_work()
    log.emit("done", run_dir=str(run_dir), name=name, metrics=card["metrics"],
             message=f"Training finished: model '{name}' is registered.")
    return run_dir
