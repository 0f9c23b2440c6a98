"""Refit the trust parts of a registered run (its out-of-distribution gate and its temperature) without retraining.

A run registered before the trust layer existed, or one whose gate should be refitted
with another percentile, gets what training fits at its end: the gate on the training
split's features, the temperature on the validation split, and the binary threshold
mapped through the new temperature so that every stored decision stays the same
(``python -m medclf_core refit-trust MODEL DATA``).

The split is rebuilt exactly as training built it (:func:`rebuild_split`), and a dataset
that does not give the card's split counts is refused: the gate and the temperature
are only meaningful on the images the model was trained and validated on.

Example::

    >>> res = refit_trust("models/chest-efficientnet_lite0", "samples/datasets/chest_xray")   # doctest: +SKIP
    >>> res["ood"]["rule"], res["calibration"]["temperature"]                                  # doctest: +SKIP
    ('99th percentile ...', 1.3)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medclf_core.data.audit import audit_dataset
from medclf_core.data.scan import scan_dataset, split_counts
from medclf_core.data.split import split_dataset
from medclf_core.errors import DatasetError, MedclfError
from medclf_core.io.atomic import read_json, write_json
from medclf_core.registry.store import CARD_FILE, GATE_FILE, load_run, resolve_run
from medclf_core.trust.calibration import (apply_temperature, calibration_entry, expected_calibration_error,
                                           fit_temperature, map_threshold, stored_temperature, temperature_of)
from medclf_core.trust.features import feature_model, features_and_probabilities
from medclf_core.trust.ood import (REFUSE_FACTOR, fit_gate, load_gate, refuse_factor_problem,
                                   with_refuse_tier)

REFIT_CHUNK = 256  # images decoded and run at a time: bounded memory on large datasets


def refit_trust(run: str | os.PathLike, data: str | os.PathLike | None = None, *,
                models_dir: str | os.PathLike | None = None, percentile: float = 99.0,
                refuse_factor: float | None = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Fit the OOD gate and the temperature of a registered run, without retraining its weights.

    ``data`` defaults to the card's dataset source. ``refuse_factor``: the refuse tier's multiple of the
    unfamiliar threshold; None keeps the run's (its config's ``ood_refuse_factor``, else
    :data:`~medclf_core.trust.ood.REFUSE_FACTOR`), a number is also written to the card's config so a later
    refit keeps it. Writes ``ood.npz`` and updates ``card.json`` (``"ood"``, ``"calibration"``,
    ``"threshold"``, and that config key; every other key kept verbatim). Returns ``{"run_dir", "ood",
    "calibration", "threshold", "gate_file"}``.
    """
    if refuse_factor is not None and (why := refuse_factor_problem(refuse_factor)):
        raise MedclfError(f"refuse_factor {why}.")  # before any image is read
    run_dir = Path(resolve_run(run, models_dir))
    model, card = load_run(run_dir)
    card.pop("run_dir", None)
    report, splits = rebuild_split(card, data)
    side, _, channels = card["input_shape"]
    features = _FeaturePass(feature_model(model), side, channels, progress,
                            total=len(splits["train"]) + len(splits["val"]))
    f_train, _ = features.run(splits["train"])
    f_val, p_val = features.run(splits["val"], views=tuple(card.get("tta") or ()))
    y_train, y_val = _labels(splits["train"]), _labels(splits["val"])
    factor = refuse_factor if refuse_factor is not None else \
        float((card.get("config") or {}).get("ood_refuse_factor", REFUSE_FACTOR))
    gate = fit_gate(f_train, y_train, f_val, percentile=percentile, refuse_factor=factor)
    if (card.get("recipe") or {}).get("cross_validated_head"):
        # a small-data run's validation images are in its head: its out-of-fold calibration stays as it is
        threshold, calibration = card.get("threshold"), dict(card.get("calibration") or {})
    else:
        temperature = fit_temperature(y_val, p_val, lower=1.0)
        threshold = _mapped_threshold(card, temperature)
        calibration = _calibration(card, run_dir, temperature, y_val, p_val, threshold)
    ood_entry = {**gate.summary(), "split": {"train": len(y_train), "val": len(y_val)},
                 "dataset_fingerprint_matches": report.fingerprint == (card.get("dataset") or {}).get("fingerprint"),
                 "refit": calibration.get("refit") or datetime.now(UTC).isoformat(timespec="seconds")}
    gate.save(run_dir)
    # the card as it is on disk, with only these three entries changed (every other key kept verbatim)
    raw_card = json.loads((run_dir / CARD_FILE).read_text())
    raw_card.update({"ood": ood_entry, "calibration": calibration, "threshold": threshold})
    if refuse_factor is not None:
        raw_card["config"] = {**(raw_card.get("config") or {}), "ood_refuse_factor": float(refuse_factor)}
    write_json(run_dir / CARD_FILE, raw_card)
    return {"run_dir": str(run_dir), "ood": ood_entry, "calibration": calibration, "threshold": threshold,
            "gate_file": str(run_dir / GATE_FILE)}


def rebuild_split(card: Mapping, data: str | os.PathLike | None = None):
    """The run's ``(audit report, splits)``, rebuilt on ``data`` exactly as training built them.

    Uses the card's config ``seed``, ``val_split``, ``test_split``, ``group_pattern`` and
    ``near_duplicate_distance``; raises :class:`DatasetError` when the classes or the split
    counts differ from the card's (not the dataset the model was trained on), or when the
    validation split is empty.
    """
    cfg = card.get("config") or {}
    dataset = card.get("dataset") or {}
    data = data or cfg.get("data") or dataset.get("source")
    if not data:
        raise DatasetError("The card does not say which dataset the model was trained on: pass DATA.")
    index = scan_dataset(data)
    if index.class_names != card.get("class_names"):
        raise DatasetError(f"The dataset's classes ({', '.join(index.class_names)}) are not the model's "
                           f"({', '.join(card.get('class_names') or [])}).")
    report = audit_dataset(index, near_duplicate_distance=cfg.get("near_duplicate_distance", 8))
    splits = split_dataset(index, report, val_fraction=cfg.get("val_split", 0.15),
                           test_fraction=cfg.get("test_split", 0.15),
                           seed=cfg.get("seed", dataset.get("split_seed", 1337)), group_pattern=cfg.get("group_pattern"))
    counts = split_counts(splits, index.class_names)
    if dataset.get("counts") and _nonempty(counts) != _nonempty(dataset["counts"]):
        raise DatasetError(f"Splitting {data} does not give the model's train/val/test split (counts {counts}, "
                           f"the card says {dataset['counts']}): it is not the dataset the model was trained on.")
    if not splits["val"]:
        raise DatasetError("The validation split is empty; the gate's threshold and the temperature need it.")
    return report, splits


def _nonempty(counts: Mapping) -> dict:
    """Split counts without the splits that hold no image (``{"test": {"a": 0}}`` and no test split agree)."""
    return {k: v for k, v in counts.items() if any(v.values())}


def _labels(items) -> np.ndarray:
    return np.array([it.label for it in items], dtype=int)


class _FeaturePass:
    """Features and probabilities of dataset items, ``REFIT_CHUNK`` images at a time, with one progress count."""

    def __init__(self, model, side: int, channels: int, progress, total: int):
        self.model, self.side, self.channels, self.progress, self.total = model, side, channels, progress, total
        self.done = 0

    def run(self, items, views: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        for start in range(0, len(items), REFIT_CHUNK):
            chunk = items[start:start + REFIT_CHUNK]
            f, p = features_and_probabilities(self.model, _load_pixels(chunk, self.side, self.channels), views=views)
            feats.append(f)
            probs.append(p)
            self.done += len(chunk)
            if self.progress:
                self.progress(self.done, self.total)
        return np.concatenate(feats), np.concatenate(probs)


def _load_pixels(items, image_size: int, channels: int) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    from medclf_core.io.images import load_for_model

    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda it: load_for_model(it.path, image_size, channels), items))
    return np.stack(out) if out else np.zeros((0, image_size, image_size, channels), dtype=np.uint8)


def _mapped_threshold(card: Mapping, temperature: float) -> float | None:
    """The card's binary threshold moved to the new temperature: the same decisions on every image.

    It is mapped from the uncalibrated threshold, so a second refit does not compound the first.
    """
    if len(card.get("class_names") or []) != 2:
        return card.get("threshold")
    old_t = temperature_of(card)
    raw_threshold = map_threshold(card.get("threshold"), 1.0 / old_t if old_t else None)
    return map_threshold(raw_threshold, temperature)


def _calibration(card: Mapping, run_dir: Path, temperature: float, y_val, p_val, threshold) -> dict:
    """The card's new ``"calibration"`` entry, with the expected calibration error of the stored predictions."""
    stored_t = stored_temperature(card)
    calibration = calibration_entry(temperature, y_val, p_val, threshold=threshold,
                                    stored_predictions="calibrated" if stored_t else "raw")
    if stored_t:  # evaluation.json keeps the probabilities scaled by the earlier temperature
        calibration["stored_temperature"] = stored_t
    evaluation = read_json(run_dir, "evaluation.json") or {}
    names = list(card.get("class_names") or [])
    rows = [p for p in evaluation.get("predictions") or [] if p.get("label") in names]
    if rows:
        y_t = np.array([names.index(p["label"]) for p in rows])
        p_t = apply_temperature(np.array([p["probabilities"] for p in rows], dtype=np.float64),
                                1.0 / stored_t if stored_t else None)
        calibration[f"{evaluation.get('split', 'test')}_ece"] = [
            expected_calibration_error(y_t, p_t), expected_calibration_error(y_t, apply_temperature(p_t, temperature))]
    calibration["refit"] = datetime.now(UTC).isoformat(timespec="seconds")
    return calibration


def add_unfamiliar_tier(run: str | os.PathLike, *, models_dir: str | os.PathLike | None = None,
                        factor: float = REFUSE_FACTOR) -> dict:
    """Give a run's one-threshold (version-1) gate the two tiers of today's training, without new statistics.

    Its threshold (the 99th-percentile rule) becomes the *unfamiliar* tier and ``factor`` times it the
    *refuse* tier (:func:`medclf_core.trust.ood.with_refuse_tier`). Rewrites ``ood.npz`` (same means and
    covariance) and only the card's ``"ood"`` entry; weights, calibration and threshold are untouched.
    A gate that has the tier already is left alone. Returns the card's new ``"ood"`` entry.
    """
    run_dir = Path(resolve_run(run, models_dir))
    gate = load_gate(run_dir)
    if gate is None:
        raise DatasetError(f"{run_dir.name} has no out-of-distribution gate ({GATE_FILE}): run refit-trust.")
    raw_card = json.loads((run_dir / CARD_FILE).read_text())
    if gate.near_threshold is not None:
        return raw_card.get("ood") or gate.summary()
    old_flagged = gate.val_fraction_flagged
    gate = with_refuse_tier(gate, gate.threshold, factor)
    # the validation scores are not stored: the share above the old threshold bounds the share refused now
    gate.val_fraction_flagged = old_flagged
    gate.save(run_dir)
    entry = {**(raw_card.get("ood") or {}), **gate.summary(), "val_fraction_unfamiliar": old_flagged,
             "val_fraction_flagged_is_upper_bound": True,
             "two_tiers_added": datetime.now(UTC).isoformat(timespec="seconds")}
    raw_card["ood"] = entry
    write_json(run_dir / CARD_FILE, raw_card)
    return entry
