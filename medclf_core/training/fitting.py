"""Fitting one model: build it (or take over an earlier run's), run the recipe's phases, restore the best epoch.

Recipes: ``scratch`` fits on images (:func:`_fit_images`); ``transfer`` fits a head on
backbone features cached once (:func:`_fit_transfer_head`); a pretrained model may then
fine-tune its top blocks on images (:func:`_fine_tune`). Everything one fit needs is in
a :class:`FitContext`; :func:`fit_member` returns a :class:`Member`.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medclf_core.models.architectures import build_model, set_trainable_from
from medclf_core.data.augment import AugmentConfig
from medclf_core.training.devices import DevicePlan, precision_policy
from medclf_core.models.ensemble import split_member
from medclf_core.errors import MedclfError
from medclf_core.training.events import EventLog
from medclf_core.data.pipeline import make_dataset
from medclf_core.training.callbacks import BestCheckpoint, CleanBatchNormStatistics, Progress, synced_backup
from medclf_core.training.config import TrainConfig
from medclf_core.data.tta import tf_view


BN_STATISTICS_IMAGES = 2048  # training images that re-estimate BatchNorm statistics before each validation

@dataclass
class FitContext:
    """What every phase of fitting one model reads: the run's settings, data and devices, and which member it is.

    The run-wide part is made once (``member`` 1); :meth:`for_member` gives member ``k``'s copy
    (its seed and work folder).
    """

    cfg: TrainConfig                   # resolved
    spec: object                       # the architecture's ArchSpec
    plan: DevicePlan
    log: EventLog
    cancel: Callable[[], bool] | None
    splits: dict                       # {"train", "val", "test"}: lists of dataset items
    class_names: list[str]
    augment: AugmentConfig
    val_ds: object                     # the validation tf.data.Dataset (shared by every member)
    class_weight: dict | None
    work: Path                         # this member's work folder (resume state)
    init_model: object = None          # init_from: the earlier run's model, its card, and (ensembles) its weights
    init_card: dict | None = None
    init_weights: list | None = None
    split_init: bool = False           # init_from is an ensemble: member k starts from its member k
    seed: int = 0
    member: int = 1
    members: int = 1

    def for_member(self, k: int, work: Path) -> FitContext:
        """Member ``k`` (1-based): seed ``cfg.seed + k - 1``, its own work folder."""
        return dataclasses.replace(self, member=k, seed=self.cfg.seed + k - 1, work=work)

    @property
    def history_path(self) -> Path:
        return self.work / "history.json"

    @property
    def n_train(self) -> int:
        return len(self.splits["train"])

    @property
    def global_batch(self) -> int:
        """Per-device batch x replicas (all workers)."""
        return self.cfg.batch_size * self.plan.replicas


@dataclass
class Member:
    """One fitted model and what the card says about it."""

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


def fit_member(ctx: FitContext) -> Member:
    """Build (or take over ``ctx.init_model``), fit and restore the best epoch of one model.

    Member ``k`` of an ensemble uses ``seed = cfg.seed + k - 1`` for its initialisation,
    shuffling and augmentation; the split is the same for every member. A finished
    member's weights stay in its work folder, so a resumed run does not retrain it.
    """
    import keras

    from medclf_core.training.tf_compat import fix_symbolic_build_for_multi_worker

    cfg, plan, member, members = ctx.cfg, ctx.plan, ctx.member, ctx.members
    keras.utils.set_random_seed(ctx.seed)
    # learning rate scaled linearly with the replicas (Goyal et al.)
    lr = cfg.learning_rate * plan.replicas
    train_ds = for_strategy(make_dataset([it.path for it in ctx.splits["train"]], labels_of(ctx.splits["train"]),
                                         training=True, augment=ctx.augment, cache=cfg.cache,
                                         image_size=cfg.image_size, channels=cfg.channels,
                                         batch_size=ctx.global_batch, seed=ctx.seed), plan)
    steps = int(np.ceil(ctx.n_train / ctx.global_batch))

    pretrained, pretrained_source = False, None
    with precision_policy(plan.mixed_precision), plan.strategy.scope():
        if ctx.init_model is not None:
            model = _take_over_init(ctx)
        else:
            options = {k: v for k, v in {**ctx.spec.defaults, **cfg.model_options}.items()
                       if k not in ("image_size", "channels", "batch_size", "learning_rate", "epochs")}
            options["weights"] = cfg.weights  # build_model passes it only to factories that take weights
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = build_model(cfg.arch, len(ctx.class_names), cfg.image_size, cfg.channels, **options)
            if member == 1:
                for w in caught:
                    ctx.log.emit("notice", message=str(w.message))
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
            fix_symbolic_build_for_multi_worker(model)
    xla_used = bool(model.jit_compile)  # what Keras resolved "auto" to (or fell back to: a layer without XLA)

    best = BestCheckpoint.new(ctx.work)
    finished = ctx.work / "member.done"
    train_features, views = None, None
    recipe = _recipe(cfg, pretrained)
    if finished.is_file() and best.weights_path.is_file():
        ctx.log.emit("notice", message=f"Member {member} of {members} was already trained; resuming after it.")
    else:
        if recipe == "transfer":
            train_features, views = _fit_transfer_head(ctx, model, best)
        else:
            _fit_images(ctx, model, train_ds, steps, best)
        if pretrained and cfg.fine_tune_epochs:
            _fine_tune(ctx, model, train_ds, steps, best)
            train_features = None  # the backbone changed: cached features no longer describe it
        if members > 1:
            finished.write_text("done\n")

    if plan.distributed:
        # Evaluate and save an ordinary single-device copy: every worker predicts the same full splits
        # (no cross-worker gathers), and nothing after this point is a collective op.
        model = _plain_copy(model)
    if best.weights_path.is_file():
        model.load_weights(best.weights_path)  # the best validation-loss epoch, as EarlyStopping(restore) would
    history = json.loads(ctx.history_path.read_text()) if ctx.history_path.is_file() else []
    return Member(model, history, member, ctx.seed, (best.best_epoch + 1) if best.best_epoch is not None else None,
                  best.best if np.isfinite(best.best) else None, pretrained, xla_used, train_features, recipe, views,
                  str(pretrained_source) if pretrained else None)


def _take_over_init(ctx: FitContext):
    """The earlier run's model for this member: itself, its member k, or a copy; a new head for new classes."""
    import keras

    if ctx.split_init:
        model = split_member(ctx.init_model, ctx.member, name=ctx.init_card["architecture"])
    elif ctx.plan.distributed or ctx.member > 1:  # own variables: under the strategy, or one copy per member
        model = keras.models.clone_model(ctx.init_model)
        model.set_weights(ctx.init_weights if ctx.init_weights is not None else ctx.init_model.get_weights())
    else:
        model = ctx.init_model
    if ctx.init_card["class_names"] != ctx.class_names:
        model = _replace_head(model, len(ctx.class_names))
    return model


def _recipe(cfg, pretrained: bool) -> str:
    """``transfer`` (head on cached features) or ``scratch`` (fit on images), resolving ``auto``."""
    if cfg.recipe == "transfer" and not pretrained:
        raise MedclfError("The transfer recipe needs a pretrained backbone (an architecture with ImageNet weights, "
                          "weights not 'none').")
    if cfg.recipe == "auto":
        return "transfer" if pretrained and not cfg.init_from else "scratch"
    return cfg.recipe


def _callbacks(ctx: FitContext, phase: str, epochs: int, steps: int, best, backup: str) -> list:
    import keras

    return [
        synced_backup(ctx.work / backup, ctx.plan.kind == "multi_worker"),
        Progress.new(ctx.log, epochs, steps, ctx.history_path, ctx.cancel, phase, n_train=ctx.n_train,
                     member=ctx.member, members=ctx.members),
        best,
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=ctx.cfg.lr_patience,
                                          min_lr=1e-6, verbose=0),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=ctx.cfg.patience, restore_best_weights=False),
    ]


def _fit_images(ctx: FitContext, model, train_ds, steps: int, best) -> None:
    """``model.fit`` on images with progress, checkpoints, learning-rate decay and early stopping.

    BatchNorm statistics are re-estimated on unaugmented training images before each validation
    (:class:`~medclf_core.training.callbacks.CleanBatchNormStatistics`), so validation, the
    checkpoint and the saved model use statistics of real images.
    """
    callbacks = _callbacks(ctx, "train", ctx.cfg.epochs, steps, best, "backup")
    # First, so that its on_test_begin sets the statistics before the validation every other callback reads.
    callbacks.insert(0, CleanBatchNormStatistics.new(_statistics_images(ctx)))
    model.fit(train_ds, validation_data=ctx.val_ds, epochs=ctx.cfg.epochs, class_weight=ctx.class_weight,
              callbacks=callbacks, shuffle=False, verbose=0)


def _statistics_images(ctx: FitContext):
    """A seeded sample of at most ``BN_STATISTICS_IMAGES`` training images, unaugmented, decoded each time
    (not cached: no second copy of the split). Iterated eagerly by the callback on each worker, so not
    distributed (:func:`for_strategy`)."""
    sample = np.random.default_rng(ctx.seed).permutation(ctx.n_train)[:BN_STATISTICS_IMAGES]
    items = [ctx.splits["train"][i] for i in sample]
    return make_dataset([it.path for it in items], labels_of(items), training=False, cache=False,
                        image_size=ctx.cfg.image_size, channels=ctx.cfg.channels, batch_size=ctx.global_batch)


def _fit_transfer_head(ctx: FitContext, model, best) -> tuple[np.ndarray, list[str]]:
    """The transfer recipe's first phase: backbone features cached once, the head fitted on them.

    Returns the train split's features (unaugmented view), which the out-of-distribution gate
    reuses, and the names of the cached views.
    """
    from medclf_core.training.transfer import (cache_features, copy_head, feature_extractor, fit_head, head_options,
                                      view_names)

    cfg, log, splits = ctx.cfg, ctx.log, ctx.splits
    extractor = feature_extractor(model, ctx.spec.feature_layer)
    views = view_names(cfg.feature_views if ctx.augment.enabled else 0, ctx.augment.horizontal_flip)
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

    common = dict(image_size=cfg.image_size, channels=cfg.channels, batch_size=batch, cancel=ctx.cancel)
    train_f = cache_features(extractor, train_paths, views=views, augment=ctx.augment, seed=ctx.seed,
                             progress=progress(0), **common)
    val_f = cache_features(extractor, val_paths, progress=progress(train_batches), **common)[0]
    took = time.time() - started
    log.emit("notice", message=f"Backbone features: {total_images} images in {took:.0f} s "
                               f"({total_images / max(took, 1e-6):.0f} images/s).")
    y_train = np.tile(labels_of(splits["train"]), len(views))
    x_train = train_f.reshape(-1, train_f.shape[-1])
    steps = int(np.ceil(len(x_train) / 64))
    head = fit_head(x_train, y_train, val_f, labels_of(splits["val"]), num_classes=model.output_shape[-1],
                    epochs=cfg.epochs, learning_rate=cfg.learning_rate, **head_options(model),
                    class_weight=ctx.class_weight, patience=cfg.patience, seed=ctx.seed,
                    callbacks=[Progress.new(log, cfg.epochs, steps, ctx.history_path, ctx.cancel, "train",
                                            n_train=len(x_train))])
    copy_head(head, model)
    best.record(model, head.best_val_loss, head.best_epoch - 1)
    return train_f[0], views


def _fine_tune(ctx: FitContext, model, train_ds, steps: int, best) -> None:
    """Pretrained models: more epochs on images, the top blocks unfrozen, BatchNorm statistics frozen."""
    import keras

    cfg, plan = ctx.cfg, ctx.plan
    if best.weights_path.is_file():
        model.load_weights(best.weights_path)
    set_trainable_from(model, ctx.spec.fine_tune_from)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference mode: ImageNet statistics, not those of small augmented batches
    ft_lr = cfg.fine_tune_learning_rate * plan.replicas
    with plan.strategy.scope():
        model.compile(optimizer=keras.optimizers.Adam(ft_lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=plan.xla)
    ctx.log.emit("phase", phase="fine_tune", epochs=cfg.fine_tune_epochs, learning_rate=ft_lr)
    model._initial_epoch = None
    start = len(json.loads(ctx.history_path.read_text())) if ctx.history_path.is_file() else cfg.epochs
    total = start + cfg.fine_tune_epochs
    model.fit(train_ds, validation_data=ctx.val_ds, epochs=total, initial_epoch=start, class_weight=ctx.class_weight,
              callbacks=_callbacks(ctx, "fine_tune", total, steps, best, "backup_ft"), shuffle=False, verbose=0)


def for_strategy(ds, plan: DevicePlan):
    """Datasets built from file-path tensors cannot be sharded by file: shard by element (DATA) instead."""
    if not plan.distributed:
        return ds
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _plain_copy(model):
    """The same layers and weights as an ordinary model, built outside any distribution strategy."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _replace_head(model, num_classes: int):
    """Keep everything up to the classifier, put a fresh ``predictions`` layer on top."""
    import keras

    features = model.get_layer("predictions").input
    out = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(model.inputs, out, name=model.name)


def labels_of(items) -> np.ndarray:
    """The integer labels of dataset items."""
    return np.array([it.label for it in items], dtype=int)


def class_weight_for(labels: list[int], n_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced class weights (n / (k * count)) when ``mode`` is on, or auto and imbalanced (>= 1.5:1).

    >>> class_weight_for([0] * 10 + [1] * 30, 2, "auto")
    {0: 2.0, 1: 0.6666666666666666}
    >>> class_weight_for([0, 1, 0, 1], 2, "auto") is None
    True
    """
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    if mode == "off" or counts.min() == 0:
        return None
    if mode == "auto" and counts.max() / counts.min() < 1.5:
        return None
    weights = counts.sum() / (n_classes * counts)
    return {i: float(w) for i, w in enumerate(weights)}


def predict_probabilities(model, ds, views: tuple[str, ...] = ()) -> np.ndarray:
    """Class probabilities for a batched ``(x, y)`` dataset, averaged over the test-time ``views``."""
    probs = np.asarray(model.predict(ds, verbose=0), dtype=np.float64)
    for name in views:
        flipped = ds.map(lambda x, y, name=name: (tf_view(name, x), y))
        probs = probs + np.asarray(model.predict(flipped, verbose=0), dtype=np.float64)
    return probs / (1 + len(views))
