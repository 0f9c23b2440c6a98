"""A trained run's final evaluation: the out-of-distribution gate, the temperature, the threshold, the test metrics.

The threshold and the temperature (never below 1) are chosen on the validation split; the
reported metrics are those of the test split (or of validation when there is no test split),
on calibrated probabilities. An ensemble's members are each scored on validation too.
A small-data run (:mod:`medclf_core.training.crossfit`) reports out-of-fold figures over every
labelled image instead, and fits a temperature and a threshold only where there are enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medclf_core.formatting import CROSS_VALIDATION
from medclf_core.trust.calibration import apply_temperature, fit_temperature
from medclf_core.registry.card import positive_class_index
from medclf_core.trust.metrics import choose_threshold, evaluate_probabilities
from medclf_core.trust.gate_size import small_gate_notice
from medclf_core.trust.ood import fit_gate
from medclf_core.data.pipeline import make_dataset
from medclf_core.data.split import duplicate_components
from medclf_core.data.tta import tf_view
from medclf_core.training.crossfit import calibrate_out_of_fold
from medclf_core.training.labels import all_items, labels_of
from medclf_core.training.session import TrainingSession
from medclf_core.trust.features import features_and_probabilities


@dataclass
class RunEvaluation:
    """What the card and ``evaluation.json`` record about the trained model."""

    tta: tuple[str, ...]
    positive: int | None
    threshold: float | None
    temperature: float
    y_val: np.ndarray
    raw_val_probs: np.ndarray          # uncalibrated (the card's calibration entry compares both)
    val_metrics: dict
    test_metrics: dict                 # the validation metrics when there is no test split
    eval_split: str                    # "test", or "val" when there is no test split
    predictions: list[dict]            # per image of eval_split: file, label, calibrated probabilities
    gate: object                       # the fitted ood.Gate
    member_validation: list[dict] | None
    small_data: object = None          # crossfit.SmallDataCalibration of a cross-validated run (else None)
    crossfit: dict | None = None       # crossfit.CrossFit.summary()


def evaluate_run(s: TrainingSession) -> RunEvaluation:
    """Score the session's ``model`` (the merged ensemble, or the one member) as the card reports it."""
    cfg, splits, class_names, log, model, tta = s.cfg, s.splits, s.class_names, s.log, s.model, s.tta
    common = s.dataset_options
    positive = positive_class_index(class_names)
    if s.trained[0].crossfit is not None:
        return _evaluate_cross_validated(s, positive)
    member_validation = _member_validation(s, positive) if s.members > 1 else None

    # --- threshold on validation, metrics on test (or validation when there is no test split)
    log.emit("evaluate", split="val")
    y_val = labels_of(splits["val"])
    # One forward pass gives the validation probabilities and the features the out-of-distribution gate needs.
    val_features, raw_val_probs = features_and_probabilities(model, s.val_ds, tta)
    gate = fit_gate(_train_features(s), labels_of(splits["train"]), val_features, refuse_factor=cfg.ood_refuse_factor)
    log.emit("notice", message=f"Out-of-distribution gate: {gate.rule}; flags "
                               f"{gate.val_fraction_flagged:.1%} of the validation images.")
    if small := small_gate_notice(gate.summary()):
        log.emit("notice", message=small)
    # Temperature scaling on validation, never below 1 (a near-perfect validation set is not sharpened into
    # certainty); the threshold and every reported figure use calibrated probabilities.
    temperature = fit_temperature(y_val, raw_val_probs, lower=1.0)
    val_probs = apply_temperature(raw_val_probs, temperature, positive=positive)
    threshold = None
    if len(class_names) == 2:
        threshold = choose_threshold(y_val, val_probs, positive, cfg.threshold_method, cfg.target_sensitivity,
                                     seed=cfg.seed)
    val_metrics = evaluate_probabilities(y_val, val_probs, class_names, threshold=threshold, positive=positive,
                                         seed=cfg.seed, groups=split_groups(splits["val"], s))
    eval_split = "test" if splits["test"] else "val"
    if splits["test"]:
        log.emit("evaluate", split="test")
        test_ds = make_dataset([it.path for it in splits["test"]], labels_of(splits["test"]), training=False,
                               cache=False, **common)
        test_probs = apply_temperature(predict_probabilities(model, test_ds, tta), temperature, positive=positive)
        test_metrics = evaluate_probabilities(labels_of(splits["test"]), test_probs, class_names, threshold=threshold,
                                              positive=positive, seed=cfg.seed, groups=split_groups(splits["test"], s))
        scored = zip(splits["test"], test_probs, strict=True)
    else:
        test_metrics = val_metrics
        scored = zip(splits["val"], val_probs, strict=True)
    predictions = [{"file": it.rel, "label": class_names[it.label], "probabilities": p.round(6).tolist()}
                   for it, p in scored]
    return RunEvaluation(tta, positive, threshold, temperature, y_val, raw_val_probs, val_metrics, test_metrics,
                         eval_split, predictions, gate, member_validation)


def _evaluate_cross_validated(s: TrainingSession, positive: int | None) -> RunEvaluation:
    """A small-data run: out-of-fold figures over every labelled image, calibration by :func:`calibrate_out_of_fold`.

    The gate is fitted as in every run (train split's features, threshold on the validation split's).
    """
    cfg, cf = s.cfg, s.trained[0].crossfit
    items = all_items(s)
    y = labels_of(items)
    s.log.emit("evaluate", split="cross-validation", folds=cf.folds, n=len(items))
    val_features = features_and_probabilities(s.model, s.val_ds)[0]
    gate = fit_gate(_train_features(s), labels_of(s.splits["train"]), val_features,
                    refuse_factor=cfg.ood_refuse_factor)
    s.log.emit("notice", message=f"Out-of-distribution gate: {gate.rule}; flags "
                                 f"{gate.val_fraction_flagged:.1%} of the validation images.")
    if small := small_gate_notice(gate.summary()):
        s.log.emit("notice", message=small)
    cal = calibrate_out_of_fold(y, cf.oof, positive if len(s.class_names) == 2 else None, folds=cf.folds)
    s.log.emit("notice", message=f"Calibration: {cal.calibration_method}, {cal.calibration_fitted_on}"
                                 + (f"; threshold {cal.threshold:.3f} ({cal.threshold_rule})."
                                    if cal.threshold is not None else "."))
    probs = apply_temperature(cf.oof, cal.temperature, positive=positive)
    metrics = evaluate_probabilities(y, probs, s.class_names, threshold=cal.threshold, positive=positive,
                                     seed=cfg.seed, groups=split_groups(items, s))
    predictions = [{"file": it.rel, "label": s.class_names[it.label], "probabilities": p.round(6).tolist()}
                   for it, p in zip(items, probs, strict=True)]
    return RunEvaluation(s.tta, positive, cal.threshold, cal.temperature, y, cf.oof, metrics, metrics,
                         CROSS_VALIDATION, predictions, gate, None, cal, cf.summary())


def split_groups(items: list, s: TrainingSession) -> list[int] | None:
    """Each item's group by the rule the split kept together (exact and near duplicates, and one patient's images
    by ``group_pattern``; :func:`~medclf_core.data.split.duplicate_components`), so that the card's 95% intervals
    resample patients, not images; None when every image is its own group (the image bootstrap, as before)."""
    if s.report is None:
        return None
    components = duplicate_components(items, s.report, s.cfg.group_pattern)
    if all(len(c) == 1 for c in components):
        return None
    ids = [0] * len(items)
    for g, members in enumerate(components):
        for k in members:
            ids[k] = g
    return ids


def _member_validation(s: TrainingSession, positive: int | None) -> list[dict]:
    """Each ensemble member's own validation accuracy and AUC (the card's ``member_validation``)."""
    out = []
    for t in s.trained:
        probs = predict_probabilities(t.model, s.val_ds, s.tta)
        m = evaluate_probabilities(labels_of(s.splits["val"]), probs, s.class_names, threshold=None,
                                   positive=positive, seed=s.cfg.seed, bootstrap=0)
        out.append({"member": t.member, "seed": t.seed, "accuracy": m.get("accuracy"), "auc": m.get("auc"),
                    "epochs_run": len(t.history), "best_epoch": t.best_epoch, "best_val_loss": t.best_val_loss})
    return out


def _train_features(s: TrainingSession) -> np.ndarray:
    """Penultimate features of the train split (unaugmented) for the gate: the transfer recipe's cache, or a pass."""
    from medclf_core.training.transfer import head_options

    # the cache holds the feature layer's output, which is the classifier's input unless a dense layer sits between
    first = s.trained[0]
    if s.members == 1 and first.train_features is not None and not head_options(s.model)["dense_units"]:
        return first.train_features
    s.log.emit("notice", message="Computing training-image features for the out-of-distribution gate.")
    train = s.splits["train"]
    ds = make_dataset([it.path for it in train], labels_of(train), training=False, cache=False, **s.dataset_options)
    return features_and_probabilities(s.model, ds)[0]


def predict_probabilities(model, ds, views: tuple[str, ...] = ()) -> np.ndarray:
    """Class probabilities for a batched ``(x, y)`` dataset, averaged over the test-time ``views``."""
    probs = np.asarray(model.predict(ds, verbose=0), dtype=np.float64)
    for name in views:
        flipped = ds.map(lambda x, y, name=name: (tf_view(name, x), y))
        probs = probs + np.asarray(model.predict(flipped, verbose=0), dtype=np.float64)
    return probs / (1 + len(views))
