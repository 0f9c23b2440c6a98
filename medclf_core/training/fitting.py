"""Fitting one model: build it (or take over an earlier run's), run the recipe's phases, restore the best epoch.

Recipes: ``scratch`` fits on images (:func:`_fit_images`); ``transfer`` fits a head on
backbone features cached once (:mod:`~medclf_core.training.head_phase`); a pretrained model may then
fine-tune its top blocks on images (:func:`_fine_tune`). Everything one fit needs is in
the run's :class:`~medclf_core.training.session.TrainingSession` and the member's
:class:`~medclf_core.training.session.MemberSlot`; :func:`fit_member` returns a :class:`Member`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np

from medclf_core.data.pipeline import make_dataset
from medclf_core.models.architectures import build_model, set_trainable_from
from medclf_core.models.ensemble import split_member
from medclf_core.training.crossfit import use_cross_fit
from medclf_core.training.transfer import head_options
from medclf_core.training.callbacks import BestCheckpoint, CleanBatchNormStatistics, Progress
from medclf_core.training.devices import DevicePlan, precision_policy
from medclf_core.training.head_phase import fit_cross_validated_head, fit_transfer_head
from medclf_core.training.labels import all_items, labels_of
from medclf_core.training.plan import resolve_recipe
from medclf_core.training.session import MemberSlot, TrainingSession
from medclf_core.training.tf_compat import fix_symbolic_build_for_multi_worker, forget_restored_epoch, synced_backup

BN_STATISTICS_IMAGES = 2048  # training images that re-estimate BatchNorm statistics before each validation


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
    crossfit: object = None                   # transfer on few images: crossfit.CrossFit (every image, in all_items order)
    fine_tune: dict | None = None             # fine-tuned on cached activations: top_tuning.fine_tune_top's card entry


def fit_member(s: TrainingSession, m: MemberSlot) -> Member:
    """Build (or take over the earlier run's model), fit and restore the best epoch of one model.

    Member ``k`` of an ensemble uses ``seed = cfg.seed + k - 1`` for its initialisation,
    shuffling and augmentation; the split is the same for every member. A finished
    member's weights stay in its work folder, so a resumed run does not retrain it.
    """
    import keras

    cfg, plan = s.cfg, s.plan
    keras.utils.set_random_seed(m.seed)
    train_ds = for_strategy(make_dataset([it.path for it in s.splits["train"]], labels_of(s.splits["train"]),
                                         training=True, augment=s.augment, cache=cfg.cache,
                                         image_size=cfg.image_size, channels=cfg.channels,
                                         batch_size=s.global_batch, seed=m.seed), plan)
    steps = int(np.ceil(s.n_train / s.global_batch))
    model, pretrained_source = _compiled_model(s, m)
    pretrained = bool(pretrained_source)
    xla_used = bool(model.jit_compile)  # what Keras resolved "auto" to (or fell back to: a layer without XLA)

    best = BestCheckpoint.new(m.work)
    finished = m.work / "member.done"
    train_features, views, crossfit, fine_tuned = None, None, None, None
    recipe = resolve_recipe(cfg.recipe, pretrained, cfg.init_from)
    if finished.is_file() and best.weights_path.is_file():
        s.log.emit("notice", message=f"Member {m.k} of {m.members} was already trained; resuming after it.")
    else:
        if recipe == "transfer" and use_cross_fit(len(all_items(s)), head_options(model)["dense_units"],
                                                  cfg.fine_tune_epochs if pretrained else 0, cfg.small_data_images):
            train_features, views, crossfit = fit_cross_validated_head(s, m, model, best)
        elif recipe == "transfer":
            train_features, views, fine_tuned = fit_transfer_head(s, m, model, best, pretrained)
        else:
            _fit_images(s, m, model, train_ds, steps, best)
        if pretrained and cfg.fine_tune_epochs and fine_tuned is None:
            _fine_tune(s, m, model, train_ds, steps, best)
            train_features = None  # the backbone changed: cached features no longer describe it
        if m.members > 1:
            finished.write_text("done\n")

    if plan.distributed:
        # Evaluate and save an ordinary single-device copy: every worker predicts the same full splits
        # (no cross-worker gathers), and nothing after this point is a collective op.
        model = _plain_copy(model)
    if best.weights_path.is_file():
        model.load_weights(best.weights_path)  # the best validation-loss epoch, as EarlyStopping(restore) would
    history = json.loads(m.history_path.read_text()) if m.history_path.is_file() else []
    return Member(model, history, m.k, m.seed, (best.best_epoch + 1) if best.best_epoch is not None else None,
                  best.best if np.isfinite(best.best) else None, pretrained, xla_used, train_features, recipe, views,
                  str(pretrained_source) if pretrained else None, crossfit, fine_tuned)


def _compiled_model(s: TrainingSession, m: MemberSlot):
    """Member ``m``'s model, built (or taken over) and compiled under the run's strategy and precision;
    and the source of its pretrained weights (None when it has none)."""
    import keras

    cfg, plan = s.cfg, s.plan
    pretrained_source = None
    with precision_policy(plan.mixed_precision), plan.strategy.scope():
        if s.init_model is not None:
            model = _take_over_init(s, m)
        else:
            options = {k: v for k, v in {**s.spec.defaults, **cfg.model_options}.items()
                       if k not in ("image_size", "channels", "batch_size", "learning_rate", "epochs")}
            options["weights"] = cfg.weights  # build_model passes it only to factories that take weights
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = build_model(cfg.arch, len(s.class_names), cfg.image_size, cfg.channels, **options)
            if m.k == 1:
                for w in caught:
                    s.log.emit("notice", message=str(w.message))
            pretrained_source = getattr(model, "pretrained", None) or None
        if cfg.freeze_batchnorm:
            # A frozen BatchNormalization layer runs in inference mode (Keras >= 2.1 semantics): its
            # statistics stay those of the larger dataset the model came from instead of following
            # small, augmented batches, which makes validation swing between epochs.
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        # learning rate scaled linearly with the replicas (Goyal et al.)
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate * plan.replicas),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=plan.xla)
        if plan.kind == "multi_worker":
            fix_symbolic_build_for_multi_worker(model)
    return model, pretrained_source


def _take_over_init(s: TrainingSession, m: MemberSlot):
    """The earlier run's model for this member: itself, its member k, or a copy; a new head for new classes."""
    import keras

    if s.split_init:
        model = split_member(s.init_model, m.k, name=s.init_card["architecture"])
    elif s.plan.distributed or m.k > 1:  # own variables: under the strategy, or one copy per member
        model = keras.models.clone_model(s.init_model)
        model.set_weights(s.init_weights if s.init_weights is not None else s.init_model.get_weights())
    else:
        model = s.init_model
    if s.init_card["class_names"] != s.class_names:
        model = _replace_head(model, len(s.class_names))
    return model


def _callbacks(s: TrainingSession, m: MemberSlot, phase: str, epochs: int, steps: int, best, backup: str) -> list:
    import keras

    return [
        synced_backup(m.work / backup, s.plan.kind == "multi_worker"),
        Progress.new(s.log, epochs, steps, m.history_path, s.cancel, phase, n_train=s.n_train,
                     member=m.k, members=m.members),
        best,
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=s.cfg.lr_patience,
                                          min_lr=1e-6, verbose=0),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=s.cfg.patience, restore_best_weights=False),
    ]


def _fit_images(s: TrainingSession, m: MemberSlot, model, train_ds, steps: int, best) -> None:
    """``model.fit`` on images with progress, checkpoints, learning-rate decay and early stopping.

    BatchNorm statistics are re-estimated on unaugmented training images before each validation
    (:class:`~medclf_core.training.callbacks.CleanBatchNormStatistics`), so validation, the
    checkpoint and the saved model use statistics of real images.
    """
    callbacks = _callbacks(s, m, "train", s.cfg.epochs, steps, best, "backup")
    # First, so that its on_test_begin sets the statistics before the validation every other callback reads.
    callbacks.insert(0, CleanBatchNormStatistics.new(_statistics_images(s, m)))
    model.fit(train_ds, validation_data=s.val_ds, epochs=s.cfg.epochs, class_weight=s.class_weight,
              callbacks=callbacks, shuffle=False, verbose=0)


def _statistics_images(s: TrainingSession, m: MemberSlot):
    """A seeded sample of at most ``BN_STATISTICS_IMAGES`` training images, unaugmented, decoded each time
    (not cached: no second copy of the split). Iterated eagerly by the callback on each worker, so not
    distributed (:func:`for_strategy`)."""
    sample = np.random.default_rng(m.seed).permutation(s.n_train)[:BN_STATISTICS_IMAGES]
    items = [s.splits["train"][i] for i in sample]
    return make_dataset([it.path for it in items], labels_of(items), training=False, cache=False,
                        image_size=s.cfg.image_size, channels=s.cfg.channels, batch_size=s.global_batch)


def _fine_tune(s: TrainingSession, m: MemberSlot, model, train_ds, steps: int, best) -> None:
    """Pretrained models: more epochs on images, the top blocks unfrozen, BatchNorm statistics frozen."""
    import keras

    cfg, plan = s.cfg, s.plan
    if best.weights_path.is_file():
        model.load_weights(best.weights_path)
    set_trainable_from(model, s.spec.fine_tune_from)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference mode: ImageNet statistics, not those of small augmented batches
    ft_lr = cfg.fine_tune_learning_rate * plan.replicas
    with plan.strategy.scope():
        model.compile(optimizer=keras.optimizers.Adam(ft_lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=plan.xla)
    s.log.emit("phase", phase="fine_tune", epochs=cfg.fine_tune_epochs, learning_rate=ft_lr)
    forget_restored_epoch(model)  # a resumed first phase's epoch would override initial_epoch
    start = len(json.loads(m.history_path.read_text())) if m.history_path.is_file() else cfg.epochs
    total = start + cfg.fine_tune_epochs
    model.fit(train_ds, validation_data=s.val_ds, epochs=total, initial_epoch=start, class_weight=s.class_weight,
              callbacks=_callbacks(s, m, "fine_tune", total, steps, best, "backup_ft"), shuffle=False, verbose=0)


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


