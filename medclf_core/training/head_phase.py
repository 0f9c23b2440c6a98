"""The transfer recipe's head phase: backbone features cached once, then the classifier head fitted on them.

On enough images the head is fitted on the train split and checked on validation (:func:`fit_transfer_head`,
then, where the architecture allows it, the top blocks on cached activations,
:mod:`~medclf_core.training.top_tuning`); on few images it is fitted on every labelled image, its L2 strength
chosen by cross-validation (:func:`fit_cross_validated_head`, :mod:`~medclf_core.training.crossfit`).
:mod:`~medclf_core.training.fitting` chooses between them and runs the image phases.
"""

from __future__ import annotations

import time

import numpy as np

from medclf_core.training.callbacks import Progress
from medclf_core.training.labels import all_items, labels_of
from medclf_core.training.session import MemberSlot, TrainingSession
from medclf_core.training.transfer import head_options


def backbone_features(s: TrainingSession, m: MemberSlot, model, cached: list, plain: list,
                      views: list[str], extractor=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Backbone features, one pass each, with progress: ``cached`` items in every view (V, N, D), ``plain``
    items unaugmented (M, D; None when there are none). ``extractor``: another part of the backbone to run
    (cached fine-tuning: up to the activations it starts from)."""
    from medclf_core.training.transfer import cache_features, feature_extractor

    cfg, log = s.cfg, s.log
    extractor = extractor or feature_extractor(model, s.spec.feature_layer)
    total_images = len(cached) * len(views) + len(plain)
    log.emit("epoch_begin", epoch=1, epochs=1, phase="features")
    log.emit("notice", message=f"Computing backbone features once: {len(cached)} training images x "
                               f"{len(views)} views ({', '.join(views)})"
                               + (f" and {len(plain)} validation images." if plain else "."))
    started = time.time()
    batch = int(cfg.batch_size)
    cached_batches = int(np.ceil(len(cached) / batch)) * len(views)
    batches = cached_batches + int(np.ceil(len(plain) / batch))

    def progress(offset: int):
        def report(done: int, _total: int) -> None:
            done += offset
            eta = (time.time() - started) / done * (batches - done)
            log.emit("batch", epoch=1, epochs=1, batch=done, batches=batches, eta_s=round(eta, 1), phase="features")
        return report

    common = dict(image_size=cfg.image_size, channels=cfg.channels, batch_size=batch, cancel=s.cancel)
    feats = cache_features(extractor, [it.path for it in cached], views=views, augment=s.augment, seed=m.seed,
                           progress=progress(0), **common)
    plain_f = (cache_features(extractor, [it.path for it in plain], progress=progress(cached_batches), **common)[0]
               if plain else None)
    took = time.time() - started
    log.emit("notice", message=f"Backbone features: {total_images} images in {took:.0f} s "
                               f"({total_images / max(took, 1e-6):.0f} images/s).")
    return feats, plain_f



def transfer_views(s: TrainingSession) -> list[str]:
    from medclf_core.training.transfer import view_names

    return view_names(s.cfg.feature_views if s.augment.enabled else 0, s.augment.horizontal_flip)



def fit_transfer_head(s: TrainingSession, m: MemberSlot, model, best, pretrained: bool):
    """The transfer recipe's first phase: backbone features cached once, the head fitted on them; then, where
    the architecture fine-tunes on cached activations (:mod:`~medclf_core.training.top_tuning`), its top blocks.

    Returns the train split's features (unaugmented view) of the final model, which the out-of-distribution
    gate reuses, the names of the cached views, and the fine-tuning's card entry (None: not fine-tuned here).
    """
    from medclf_core.training.invariance import fold_projection, project, session_mark_projection
    from medclf_core.training.top_tuning import fine_tune_top, start_cache
    from medclf_core.training.transfer import copy_head, fit_head

    cfg, log, splits = s.cfg, s.log, s.splits
    views = transfer_views(s)
    cache = start_cache(s, model, pretrained)  # None unless fine-tuning on cached activations
    train_f, val_f = backbone_features(s, m, model, splits["train"], splits["val"], views,
                                        cache.trunk if cache else None)
    train_f, val_f = cache.keep(train_f, val_f) if cache else (train_f, val_f)
    y_train = np.tile(labels_of(splits["train"]), len(views))
    proj = session_mark_projection(s, model, train_f[0])  # None unless the augmentation projects marks out
    x_train, val_f = project(train_f.reshape(-1, train_f.shape[-1]), proj), project(val_f, proj)
    steps = int(np.ceil(len(x_train) / 64))
    head = fit_head(x_train, y_train, val_f, labels_of(splits["val"]), num_classes=model.output_shape[-1],
                    epochs=cfg.epochs, learning_rate=cfg.learning_rate, **head_options(model),
                    class_weight=s.class_weight, patience=cfg.patience, seed=m.seed,
                    callbacks=[Progress.new(log, cfg.epochs, steps, m.history_path, s.cancel, "train",
                                            n_train=len(x_train))])
    copy_head(head, model)
    fold_projection(model, proj)
    best.record(model, head.best_val_loss, head.best_epoch - 1)
    if cache:
        features, info = fine_tune_top(s, m, model, cache, labels_of(splits["train"]), labels_of(splits["val"]), best,
                                       projected=proj is not None)
        return features, views, info
    return train_f[0], views, None



def fit_cross_validated_head(s: TrainingSession, m: MemberSlot, model, best):
    """The transfer recipe on few images (:mod:`~medclf_core.training.crossfit`): every labelled image in the
    head, its L2 strength chosen by group-aware cross-validation. Returns the train split's features (for the
    gate), the cached views and the :class:`~medclf_core.training.crossfit.CrossFit`."""
    from medclf_core.data.split import duplicate_components
    from medclf_core.io.atomic import write_json
    from medclf_core.training.crossfit import cross_fit

    items, views = all_items(s), transfer_views(s)
    feats, _ = backbone_features(s, m, model, items, [], views)
    s.check_cancel()
    started = time.time()
    cf = cross_fit(feats, labels_of(items), duplicate_components(items, s.report, s.cfg.group_pattern),
                   num_classes=model.output_shape[-1], class_weight=s.class_weight, seed=m.seed,
                   score_views=(0, *[views.index(v) for v in s.tta if v in views]))
    model.get_layer("predictions").set_weights([cf.kernel, cf.bias])
    loss = cf.cv_log_loss[cf.C]
    s.log.emit("notice", message=f"{len(items)} images (fewer than the held-out recipe needs): the head is fitted "
                                 f"on all of them, L2 strength C = {cf.C:.3g} chosen by {cf.folds}-fold "
                                 f"cross-validation (out-of-fold log-loss {loss:.3f}).")
    record = {"epoch": 0, "phase": "cross_validation", "cv_log_loss": loss, "C": cf.C, "folds": cf.folds,
              "seconds": round(time.time() - started, 2)}
    write_json(m.history_path, [record])
    s.log.emit("epoch", epoch=1, epochs=1, metrics={"cv_log_loss": loss}, seconds=record["seconds"],
               eta_s=0.0, phase="cross_validation")
    best.record(model, loss, 0)
    return feats[0][:len(s.splits["train"])], views, cf
