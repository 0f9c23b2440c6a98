"""The model card of a trained run, as a :class:`medclf_core.registry.card.ModelCard` (the one card type)."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np

from medclf_core import __version__
from medclf_core.registry.card import CARD_SCHEMA_VERSION, ModelCard
from medclf_core.models.ensemble import member_layer_names, member_prefix
from medclf_core.trust.metrics import THRESHOLD_RULES
from medclf_core.formatting import CROSS_VALIDATION
from medclf_core.training.session import TrainingSession
from medclf_core.trust.calibration import calibration_entry


def build_card(s: TrainingSession, name: str) -> ModelCard:
    """The card of the session's run: what it is, how it was trained, on what, and how well it did.

    Validated by :meth:`ModelCard.from_dict`: a card that would not read back fails here,
    before anything is registered.
    """
    cfg, ev, class_names = s.cfg, s.evaluation, s.class_names
    first = s.trained[0]
    card = {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": name,
        "intended_use": cfg.intended_use,
        "training_data": cfg.training_data,
        "task": cfg.task or s.index.name,
        "class_names": class_names,
        "positive_class": class_names[ev.positive] if ev.positive is not None else None,
        "architecture": cfg.arch,
        "input_shape": [cfg.image_size, cfg.image_size, cfg.channels],
        "input_spec": {"dtype": "float32", "value_range": [0, 255],
                       "preprocessing": "decode by content, 8-bit, squash-resize to input_shape "
                                        "(OpenCV INTER_AREA down / INTER_LINEAR up); rescaling is inside the model",
                       "channels": "grayscale" if cfg.channels == 1 else "RGB"},
        "cam_layer": _cam_layer(first.model, _base_cam_layer(s.init_card, s.spec, s.split_init), s.members),
        "tta": list(ev.tta),
        **_model_entries(s),
        "dataset": {"source": str(cfg.data), "name": s.index.name, "fingerprint": s.report.fingerprint,
                    "layout": "presplit" if s.index.presplit else "class folders (split by medclf)",
                    "counts": s.counts, "split_seed": cfg.seed, "audit_warnings": s.report.warnings(),
                    "unreadable": len(s.report.unreadable)},
        "metrics": _summary(ev.test_metrics, ev.eval_split),
        "validation_metrics": _summary(ev.val_metrics, "val" if ev.small_data is None else ev.eval_split),
        **_threshold_entries(s),
        "ood": ev.gate.summary(),
        "training": _training_entry(s),
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return ModelCard.from_dict(card)


def _model_entries(s: TrainingSession) -> dict:
    """``recipe``, ``pretrained``, ``ensemble`` and ``config``: how the model was made."""
    cfg, spec, trained = s.cfg, s.spec, s.trained
    first = trained[0]
    pretrained = first.pretrained
    return {
        "recipe": {"name": first.recipe, "views": first.views, "cross_validated_head": s.evaluation.crossfit,
                   "fine_tune_epochs": cfg.fine_tune_epochs if pretrained else 0,
                   "fine_tune_from": spec.fine_tune_from if pretrained and cfg.fine_tune_epochs else None,
                   **({"fine_tune": first.fine_tune} if first.fine_tune else {})},  # training/top_tuning.py
        "pretrained": ({"weights": "imagenet" if cfg.weights == "imagenet" else "file", "source": spec.pretrained,
                        "file": os.path.basename(first.pretrained_source)} if pretrained else None),
        "ensemble": ({"members": s.members, "seeds": [t.seed for t in trained], "combination": "mean of logits",
                      "member_validation": s.evaluation.member_validation} if s.members > 1 else None),
        "config": {**asdict(cfg), "augment_resolved": s.augment.to_dict(), "class_weight": s.class_weight,
                   "pretrained_weights": pretrained, "init_from": s.init_card["name"] if s.init_card else None},
    }


def _threshold_entries(s: TrainingSession) -> dict:
    """``threshold``, how it was chosen, and the ``calibration`` it was chosen on."""
    cfg, ev = s.cfg, s.evaluation
    threshold, small = ev.threshold, ev.small_data
    if small is not None:  # cross-validated small-data run: out-of-fold fits, or the rule the card states
        rule = ({"method": "rule",
                 "chosen_for": small.threshold_rule, "on": small.threshold_on,
                 "validation_sensitivity": ev.val_metrics.get("sensitivity"),
                 "validation_specificity": ev.val_metrics.get("specificity")} if threshold is not None else None)
        calibration = calibration_entry(ev.temperature, ev.y_val, ev.raw_val_probs, threshold=threshold,
                                        stored_predictions="calibrated", method=small.calibration_method,
                                        fitted_on=small.calibration_fitted_on)
        return {"threshold": threshold, "threshold_method": rule["method"] if rule else None,
                "threshold_rule": rule, "calibration": calibration}
    return {
        "threshold": threshold,
        "threshold_method": cfg.threshold_method if threshold is not None else None,
        "threshold_rule": ({"method": cfg.threshold_method, "chosen_for": THRESHOLD_RULES[cfg.threshold_method],
                            "on": "validation split, calibrated probabilities",
                            "validation_sensitivity": ev.val_metrics.get("sensitivity"),
                            "validation_specificity": ev.val_metrics.get("specificity")}
                           if threshold is not None else None),
        "calibration": calibration_entry(ev.temperature, ev.y_val, ev.raw_val_probs, threshold=threshold,
                                         stored_predictions="calibrated",
                                         method="temperature scaling (validation NLL, T >= 1: never sharpened)"),
    }


def _training_entry(s: TrainingSession) -> dict:
    """The card's ``training``: epochs, best epochs, time, devices and throughput."""
    cfg, plan, trained = s.cfg, s.plan, s.trained
    return {"epochs_run": _per_member([len(t.history) for t in trained]),
            "best_epoch": _per_member([t.best_epoch for t in trained]),
            "best_val_loss": _per_member([t.best_val_loss for t in trained]),
            "seconds": round(time.time() - s.started, 1), "devices": plan.describe(),
            "global_batch_size": s.global_batch, "learning_rate": cfg.learning_rate * plan.replicas,
            "replicas": plan.replicas, "workers": plan.num_workers, "strategy": plan.kind,
            "mixed_precision": plan.mixed_precision, "xla": trained[0].xla_used,
            "images_per_s": _typical_images_per_s(s.history)}


def versions() -> dict:
    """The versions of medclf and of the libraries the model was trained with."""
    import keras
    import tensorflow as tf

    return {"medclf": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "numpy": np.__version__}


def _typical_images_per_s(history: list[dict]) -> float | None:
    """Median training throughput over the epochs, leaving out the first (tracing, cache fill) when possible.

    >>> _typical_images_per_s([{"images_per_s": 10.0}, {"images_per_s": 50.0}, {"images_per_s": 70.0}])
    60.0
    """
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
    from medclf_core.explain.views import find_cam_layer

    layers = [find_cam_layer(model, layer)] if isinstance(layer, str) else list(layer)
    if members > 1:
        layers = [name for base in layers for name in member_layer_names(base, members)]
    return layers[0] if len(layers) == 1 else layers


def _summary(m: dict, split: str) -> dict:
    """The card's figures of one split; a small-data run's are out-of-fold over every image, and say so."""
    keys = ("n", "accuracy", "balanced_accuracy", "macro_f1", "auc", "sensitivity", "specificity", "ci95",
            "n_groups")  # n_groups: the ci95 resampled patients and near-duplicate groups, not images
    out = {"split": split, **{k: m.get(k) for k in keys if k in m}}
    if split == CROSS_VALIDATION:
        out["note"] = (f"cross-validated: out-of-fold predictions of all {m.get('n')} labelled images (the final "
                       "model was fitted on all of them); ci95 are bootstrap 95% intervals")
    return out
