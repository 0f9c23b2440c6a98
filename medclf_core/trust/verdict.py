"""The trust layer's glue: features and probabilities in one forward pass, OOD verdicts, and refitting a run.

- :func:`feature_model` / :func:`features_and_probabilities`: a two-output view of a
  model (``[probabilities, penultimate features]``, the features being the input of
  the layer named ``predictions``), so the out-of-distribution gate costs no extra
  forward pass. Test-time views average the probabilities; the features are those
  of the unflipped view.
- :func:`verdict`: the ``ood`` / ``ood_score`` / ``ood_reason`` fields of one result
  (see :data:`NOT_CHECKED` for the "not checked" convention).
- :func:`ood_block`: what ``evaluate`` reports about the flagged images.
- :func:`refit_trust`: fit the gate and the temperature of an existing run without
  retraining its weights (``python -m medclf_core refit-trust MODEL DATA``).

What training does at the end (the same as :func:`refit_trust`)::

    >>> from medclf_core import calibration, ood, trust                                  # doctest: +SKIP
    >>> f_train, _ = trust.features_and_probabilities(model, train_ds)                  # doctest: +SKIP
    >>> f_val, p_val = trust.features_and_probabilities(model, val_ds, views=tta)       # doctest: +SKIP
    >>> gate = ood.fit_gate(f_train, y_train, f_val)                                    # doctest: +SKIP
    >>> t = calibration.fit_temperature(y_val, p_val)                                   # doctest: +SKIP
    >>> p_cal = calibration.apply_temperature(p_val, t)  # choose the threshold on these # doctest: +SKIP
    >>> threshold = choose_threshold(y_val, p_cal, positive)                            # doctest: +SKIP
    >>> card["ood"] = gate.summary(); gate.save(run_folder)                             # doctest: +SKIP
    >>> card["calibration"] = trust.calibration_entry(t, y_val, p_val, threshold=threshold,
    ...                                               stored_predictions="calibrated")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medclf_core.trust.calibration import apply_temperature, expected_calibration_error, fit_temperature, map_threshold, \
    negative_log_likelihood
from medclf_core.trust.ood import GATE_FILE, OODGate, feature_reason, fit_gate, header_reason

FEATURE_LAYER = "predictions"

#: The fields of a result whose images could not be checked: no ``ood.npz`` for the model (and no
#: contradicting DICOM header). ``"ood": None`` means "not checked", never "in distribution".
NOT_CHECKED = {"ood": None, "ood_score": None, "ood_reason": None}


# ---------------------------------------------------------------------------- one forward pass

def feature_model(model, layer: str = FEATURE_LAYER):
    """A Keras model with two outputs, ``[probabilities, features]``: the same layers and weights as ``model``,
    the features being the input of the layer named ``layer`` (the classifier). The models are flat
    functional graphs, so this is one forward pass."""
    import keras

    if isinstance(model.outputs, list) and len(model.outputs) == 2:
        return model
    try:
        features = model.get_layer(layer).input
    except ValueError:
        from medclf_core.errors import ModelError

        raise ModelError(f"This model has no layer named '{layer}'; its features cannot be checked.") from None
    return keras.Model(model.inputs, [model.outputs[0], features], name=f"{model.name}_with_features")


def _batches(data, batch_size: int) -> Iterable[np.ndarray]:
    if isinstance(data, np.ndarray):
        for start in range(0, len(data), batch_size):
            yield np.asarray(data[start:start + batch_size], dtype=np.float32)
        return
    for batch in data:  # tf.data.Dataset or any iterable of batches: x, (x, y) or (x, y, w)
        x = batch[0] if isinstance(batch, tuple | list) else batch
        yield np.asarray(x, dtype=np.float32)


def features_and_probabilities(model, batch_or_dataset, views: Sequence[str] = (), *,
                               batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, D) float32, probabilities (N, K) float64)`` in one forward pass per view.

    ``model`` is a medclf model (or its :func:`feature_model`); ``batch_or_dataset`` is a
    uint8/float array ``(N, S, S, C)`` of raw pixels, or a batched ``tf.data.Dataset`` of
    ``x`` or ``(x, y)`` (as training's validation dataset). ``views`` are test-time views
    (:mod:`medclf_core.data.tta`): the probabilities are averaged over the image and each view,
    the features are the unflipped image's. The probabilities are the model's own
    (not temperature-scaled).

    Example::

        >>> from medclf_core.models.architectures import build_model
        >>> model = build_model("simple_cnn", 2, 32, 1)  # tiny and untrained
        >>> batch = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
        >>> feats, probs = features_and_probabilities(model, batch, views=["hflip"])
        >>> feats.dtype, len(feats), probs.shape, bool(np.allclose(probs.sum(axis=1), 1))
        (dtype('float32'), 3, (3, 2), True)
    """
    from medclf_core.data.tta import VIEWS, check_views

    views = check_views(views)
    fm = feature_model(model)
    feats, probs = [], []
    for x in _batches(batch_or_dataset, batch_size):
        p, f = fm.predict_on_batch(x)
        p = np.asarray(p, dtype=np.float64)
        for name in views:
            p = p + np.asarray(fm.predict_on_batch(np.ascontiguousarray(VIEWS[name](x)))[0], dtype=np.float64)
        probs.append(p / (1 + len(views)))
        feats.append(np.asarray(f, dtype=np.float32).reshape(len(x), -1))
    if not probs:
        d = int(np.prod(fm.outputs[1].shape[1:]))
        return np.zeros((0, d), dtype=np.float32), np.zeros((0, int(fm.outputs[0].shape[-1])))
    return np.concatenate(feats), np.concatenate(probs)


# ---------------------------------------------------------------------------- verdicts

def verdict(gate: OODGate | None, features: np.ndarray | None, intended_use: Mapping | None = None,
            dicom: Mapping | None = None, *, score: float | None = None) -> dict:
    """The OOD fields of one result.

    ``{"ood": True|False|None, "ood_score": float|None, "ood_reason": str|None, "ood_checks": [...]}``:

    - ``ood`` is True when the features are above the gate's threshold or the DICOM
      header contradicts the card's ``intended_use``; False when the feature gate ran
      and nothing flagged; **None ("not checked")** when the model has no gate
      (no ``ood.npz``) and the header did not flag.
    - ``ood_score`` is the gate's distance (None without a gate), ``ood_reason`` a plain
      sentence fragment (None unless flagged), ``ood_checks`` the checks that ran
      (``"features"``, ``"dicom_header"``).

    ``score`` is the gate's score of ``features`` when the caller has already computed it
    (a batch at once: :meth:`OODGate.score`).
    """
    out = dict(NOT_CHECKED)
    checks, reasons = [], []
    if gate is not None and (features is not None or score is not None):
        score = float(gate.score(np.asarray(features)[None])[0] if score is None else score)
        checks.append("features")
        out["ood_score"] = score if np.isfinite(score) else None
        out["ood"] = bool(score > gate.threshold)
        if out["ood"]:
            reasons.append(feature_reason(score, gate.threshold) if np.isfinite(score)
                           else "its features could not be computed as numbers")
    if intended_use and dicom:
        checks.append("dicom_header")
        reason = header_reason(intended_use, dicom)
        if reason:
            out["ood"] = True
            reasons.append(reason)
    out["ood_reason"] = "; ".join(reasons) or None
    out["ood_checks"] = checks
    return out


def ood_message(result: Mapping) -> str | None:
    """The plain warning the app shows for a flagged result (None when not flagged)."""
    if result.get("ood") is not True:
        return None
    return ("This image does not look like the images this model was trained on: "
            f"{result.get('ood_reason') or 'it is out of distribution'}. "
            "The model's answer is not shown as a finding.")


def ood_block(y_true, probs, ood: Sequence, class_names: list[str], *, threshold: float | None = None,
              positive: int | None = None, bootstrap: int = 1000, seed: int = 0) -> dict:
    """``evaluate``'s ``"ood"`` entry: how many images were flagged, and the metrics without them.

    ``ood`` holds each image's flag (True, False, or None = not checked). Returns
    ``{"checked", "n", "n_flagged", "fraction_flagged", "n_not_checked", "metrics_without_flagged"}``;
    ``metrics_without_flagged`` is :func:`~medclf_core.trust.metrics.evaluate_probabilities` over
    the images that were not flagged (None when none are left or nothing was checked).
    """
    from medclf_core.trust.metrics import evaluate_probabilities

    flags = list(ood)
    n = len(flags)
    checked = [f for f in flags if f is not None]
    n_flagged = int(sum(1 for f in checked if f))
    out = {"checked": bool(checked), "n": n, "n_flagged": n_flagged,
           "fraction_flagged": (n_flagged / n) if n else None, "n_not_checked": n - len(checked),
           "metrics_without_flagged": None}
    keep = np.array([f is not True for f in flags], dtype=bool)
    if checked and keep.any():
        out["metrics_without_flagged"] = evaluate_probabilities(
            np.asarray(y_true)[keep], np.asarray(probs)[keep], class_names, threshold=threshold, positive=positive,
            bootstrap=bootstrap, seed=seed)
    return out


# ---------------------------------------------------------------------------- calibration in the card

def calibration_entry(temperature: float, y_val, raw_val_probs, *, threshold: float | None = None,
                      stored_predictions: str = "raw") -> dict:
    """The card's ``"calibration"`` entry for a temperature fitted on validation data.

    ``raw_val_probs`` are the model's own validation probabilities (before scaling).
    ``threshold`` is the card's binary threshold on *calibrated* probabilities; the entry
    records it mapped back (``threshold_uncalibrated``), so a later refit maps it exactly.
    ``stored_predictions`` says whether the probabilities in ``evaluation.json`` are
    ``"raw"`` (the model's own: the app applies the temperature to show them) or
    ``"calibrated"`` (already scaled by this temperature).

    Example::

        >>> e = calibration_entry(2.0, [0, 1], np.array([[0.9, 0.1], [0.3, 0.7]]), threshold=0.4)
        >>> e["temperature"], round(e["threshold_uncalibrated"], 4)
        (2.0, 0.3077)
    """
    cal = apply_temperature(raw_val_probs, temperature)
    return {"method": "temperature scaling (validation NLL)", "temperature": float(temperature),
            "fitted_on": "val", "n": int(len(np.asarray(y_val))),
            "val_nll": [negative_log_likelihood(y_val, raw_val_probs), negative_log_likelihood(y_val, cal)],
            "val_ece": [expected_calibration_error(y_val, raw_val_probs), expected_calibration_error(y_val, cal)],
            "threshold_uncalibrated": map_threshold(threshold, 1.0 / float(temperature)),
            "stored_predictions": stored_predictions}


def temperature_of(card: Mapping) -> float | None:
    """The card's calibration temperature, or None for an uncalibrated (older) card."""
    return _positive((card.get("calibration") or {}).get("temperature"))


def _positive(t) -> float | None:
    try:
        t = float(t)
    except (TypeError, ValueError):
        return None
    return t if np.isfinite(t) and t > 0 else None


def _stored_temperature(card: Mapping) -> float | None:
    """The temperature already applied to ``evaluation.json``'s probabilities (None: raw)."""
    cal = card.get("calibration") or {}
    if cal.get("stored_predictions") != "calibrated":
        return None
    return _positive(cal.get("stored_temperature")) or temperature_of(card)


def stored_probabilities(card: Mapping, probs) -> np.ndarray:
    """Probabilities stored in a run's ``evaluation.json``, calibrated like the Predictor's output.

    (Temperatures compose: scaling by ``a`` then ``b`` is scaling by ``a * b``.)
    """
    t = temperature_of(card) or 1.0
    s = _stored_temperature(card) or 1.0
    names = list(card.get("class_names") or [])
    positive = names.index(card["positive_class"]) if card.get("positive_class") in names else None
    return apply_temperature(probs, t / s, positive=positive)


# ---------------------------------------------------------------------------- refit an existing run

REFIT_CHUNK = 256  # images decoded and run at a time by refit_trust


def _load_pixels(items, image_size: int, channels: int) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    from medclf_core.io.images import load_for_model

    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda it: load_for_model(it.path, image_size, channels), items))
    return np.stack(out) if out else np.zeros((0, image_size, image_size, channels), dtype=np.uint8)


def refit_trust(run: str | os.PathLike, data: str | os.PathLike | None = None, *,
                models_dir: str | os.PathLike | None = None, percentile: float = 99.0, progress=None) -> dict:
    """Fit the OOD gate and the temperature of a registered run, without retraining its weights.

    Recreates the run's train/val split exactly as training did (``scan_dataset``,
    ``audit_dataset``, ``split_dataset`` with the card's config ``seed``, ``val_split``,
    ``test_split``, ``group_pattern`` and ``near_duplicate_distance``) on ``data``
    (default: the card's dataset source) and refuses a dataset whose split counts differ
    from the card's. Fits the gate on the training split's features, its threshold and the
    temperature on the validation split (probabilities over the card's test-time views),
    maps a binary threshold through the temperature (same decisions), then writes
    ``ood.npz`` and updates ``card.json`` (``"ood"``, ``"calibration"``, ``"threshold"``).
    Returns ``{"run_dir", "ood", "calibration", "threshold"}``.
    """
    from medclf_core.data.dataset import audit_dataset, scan_dataset, split_counts, split_dataset
    from medclf_core.errors import DatasetError
    from medclf_core.registry.store import CARD_FILE, load_run, read_json, resolve_run, write_json

    run_dir = resolve_run(run, models_dir)
    model, card = load_run(run_dir)
    card.pop("run_dir", None)
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
                           test_fraction=cfg.get("test_split", 0.15), seed=cfg.get("seed", dataset.get("split_seed", 1337)),
                           group_pattern=cfg.get("group_pattern"))
    counts = split_counts(splits, index.class_names)
    if dataset.get("counts") and {k: v for k, v in counts.items() if any(v.values())} != \
            {k: v for k, v in dataset["counts"].items() if any(v.values())}:
        raise DatasetError(f"Splitting {data} does not give the model's train/val/test split (counts {counts}, "
                           f"the card says {dataset['counts']}): it is not the dataset the model was trained on.")
    if not splits["val"]:
        raise DatasetError("The validation split is empty; the gate's threshold and the temperature need it.")
    side, _, channels = card["input_shape"]
    tta = tuple(card.get("tta") or ())
    y_train = np.array([it.label for it in splits["train"]], dtype=int)
    y_val = np.array([it.label for it in splits["val"]], dtype=int)
    total = len(splits["train"]) + len(splits["val"])
    fm = feature_model(model)

    def features_of(items, done: int, views=()):
        """Features and probabilities, a chunk of images at a time (bounded memory on large datasets)."""
        feats, probs = [], []
        for start in range(0, len(items), REFIT_CHUNK):
            chunk = items[start:start + REFIT_CHUNK]
            f, p = features_and_probabilities(fm, _load_pixels(chunk, side, channels), views=views)
            feats.append(f)
            probs.append(p)
            if progress:
                progress(done + start + len(chunk), total)
        return np.concatenate(feats), np.concatenate(probs)

    f_train, _ = features_of(splits["train"], 0)
    f_val, p_val = features_of(splits["val"], len(splits["train"]), tta)
    gate = fit_gate(f_train, y_train, f_val, percentile=percentile)
    temperature = fit_temperature(y_val, p_val)

    old_t = temperature_of(card)
    raw_threshold = map_threshold(card.get("threshold"), 1.0 / old_t if old_t else None)
    binary = len(card.get("class_names") or []) == 2
    threshold = map_threshold(raw_threshold, temperature) if binary else card.get("threshold")
    stored_t = _stored_temperature(card)
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
    ood_entry = {**gate.summary(), "split": {"train": len(y_train), "val": len(y_val)},
                 "dataset_fingerprint_matches": report.fingerprint == dataset.get("fingerprint"),
                 "refit": calibration["refit"]}

    gate.save(run_dir)
    # the card as it is on disk, with only these three entries changed (every other key kept verbatim)
    raw_card = json.loads((Path(run_dir) / CARD_FILE).read_text())
    raw_card["ood"] = ood_entry
    raw_card["calibration"] = calibration
    raw_card["threshold"] = threshold
    write_json(Path(run_dir) / CARD_FILE, raw_card)
    return {"run_dir": str(run_dir), "ood": ood_entry, "calibration": calibration, "threshold": threshold,
            "gate_file": str(Path(run_dir) / GATE_FILE)}
