"""Site calibration: a temperature and a threshold fitted on one hospital's own labelled images.

A model's card carries the calibration fitted on its own validation split (same source as its
training images). A site whose images differ (scanner, population, processing) can fit its own:
:func:`site_calibration` fits, on the site's probabilities,

- a **temperature** ``T`` applied to the model's own (raw) probabilities, by NLL on the site's images
  (:func:`medclf_core.trust.calibration.fit_temperature`), bounded ``T >= 1`` by default
  (:data:`MIN_TEMPERATURE`): the site data is other-source and honest, but it is small (100
  images), and on a set the model nearly separates the NLL optimum runs to sharpening (measured:
  T = 0.18 on 50 + 50 chest films; docs/BENCHMARKS.md), which is the over-certainty this layer exists
  to remove; a site whose model is under-confident keeps T = 1 rather than a sharpening fitted on few
  images;
- for a **binary** model, a **threshold** on the site-calibrated ``P(positive)`` for a stated target
  (default sensitivity 0.95: :func:`conservative_threshold`, a low bootstrap percentile of the highest
  threshold that keeps the fitted images' sensitivity at or above it); multi-class models get the
  temperature only (argmax decides),

and checks both by **cross-fitting**: the images are split into two stratified halves, the fit on
half A is measured on half B and the fit on B on A, and the held-out results of both halves are
pooled (every image judged by a fit that did not see it). ``before`` is the card's calibration
(its temperature and threshold) on the same images. The record saved is the fit on all images.

A record lives in ``<run>/sites/<name>.json`` (:func:`save_site`, :func:`load_site`,
:func:`list_sites`); the weights and the card are never touched. :func:`apply_site` applies one.

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 40)
    >>> p1 = np.clip(np.where(y == 1, 0.9, 0.1) + rng.normal(0, 0.3, 80), 0.001, 0.999)
    >>> rec = site_calibration("north", y, np.c_[1 - p1, p1], {"class_names": ["NORMAL", "PNEUMONIA"],
    ...                        "threshold": 0.5}, bootstrap=0)
    >>> rec["site"], rec["n_per_class"], rec["target"]
    ('north', {'NORMAL': 40, 'PNEUMONIA': 40}, {'metric': 'sensitivity', 'value': 0.95})
    >>> rec["after"]["n"], rec["temperature"] >= 1.0
    (80, True)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medclf_core import __version__
from medclf_core.errors import ModelError
from medclf_core.formatting import metric_with_n, number
from medclf_core.io.atomic import read_json, write_json
from medclf_core.registry.card import positive_class_index
from medclf_core.registry.names import check_site_name
from medclf_core.trust.calibration import (
    apply_temperature,
    calibration_in_use,
    expected_calibration_error,
    fit_temperature,
    stored_temperature,
    temperature_of,
)
from medclf_core.trust.metrics import bootstrap_intervals, choose_threshold, decide
from medclf_core.trust.site_checks import check_note

SITES_DIR = "sites"
MIN_TEMPERATURE = 1.0
DEFAULT_TARGET_SENSITIVITY = 0.95
MIN_PER_CLASS = 4  # fewer images of a class in either half and the cross-fit says nothing
TEMPERATURE_RULE = ("temperature scaling by NLL on the site's images, bounded T >= {:g} (never sharper than the "
                    "model's own probabilities)")
THRESHOLD_RULE = ("the highest threshold on the site-calibrated P({}) that keeps sensitivity >= {:g} on the site's "
                  "images, or lower: the 10th percentile of that threshold over 200 bootstrap resamples of them, "
                  "when that is lower (room for new images)")



# ---------------------------------------------------------------------------- fitting

def fit_site(y, raw_probs, positive: int | None, *, target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
             min_temperature: float = MIN_TEMPERATURE) -> dict:
    """``{"temperature", "threshold"}`` fitted on ``y`` and the model's raw probabilities ``(N, K)``;
    threshold None for a multi-class model (or ``positive`` None)."""
    y = np.asarray(y, dtype=int)
    raw = np.asarray(raw_probs, dtype=np.float64)
    t = fit_temperature(y, raw, lower=min_temperature)
    threshold = None
    if raw.shape[1] == 2 and positive is not None:
        cal = apply_temperature(raw, t, positive=positive)
        threshold = conservative_threshold(y, cal, positive, target_sensitivity)
    return {"temperature": float(t), "threshold": threshold}


def conservative_threshold(y, probs, positive: int, target: float, *, n_boot: int = 200, percentile: float = 10.0,
                           seed: int = 0) -> float:
    """The ``percentile``-th percentile, over ``n_boot`` bootstrap resamples of the images, of the highest
    threshold that keeps sensitivity >= ``target`` (:func:`medclf_core.trust.metrics.choose_threshold`).

    With 50 positives the plain rule sits on the second or third lowest positive score and reaches the target on
    new images about half the time; a lower percentile of its bootstrap spread leaves room for that. Measured on
    30 draws of 50 + 50 chest films, the rest of the source reached sensitivity 0.95 in 80-90% of draws (plain
    rule: 50-83%), at 0-3 points of accuracy (``bench/site_recalibration.py``).
    """
    y, probs = np.asarray(y, dtype=int), np.asarray(probs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if np.any(y[idx] == positive) and np.any(y[idx] != positive):
            picks.append(choose_threshold(y[idx], probs[idx], positive, "sensitivity", target_sensitivity=target))
    plain = choose_threshold(y, probs, positive, "sensitivity", target_sensitivity=target)
    return float(min(np.percentile(picks, percentile), plain)) if picks else plain


def halves(y, seed: int = 0) -> np.ndarray:
    """A stratified split of ``y`` into two halves: a 0/1 flag per image (each class split as evenly as it can)."""
    y = np.asarray(y, dtype=int)
    rng = np.random.default_rng(seed)
    flag = np.zeros(len(y), dtype=int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        flag[idx[len(idx) // 2:]] = 1
    return flag


def cross_fit(y, raw_probs, positive: int | None, *, seed: int = 0, **fit_kw) -> dict:
    """Held-out probabilities and decisions for every image, each from the fit on the other half.

    Returns ``{"probs" (N, K), "y_pred" (N,), "fits": [fit on half 0, fit on half 1], "half" (N,)}``.
    """
    y = np.asarray(y, dtype=int)
    raw = np.asarray(raw_probs, dtype=np.float64)
    half = halves(y, seed)
    probs, y_pred, fits = np.zeros_like(raw), np.zeros(len(y), dtype=int), []
    for h in (0, 1):
        fit = fit_site(y[half == h], raw[half == h], positive, **fit_kw)
        fits.append(fit)
        other = half != h
        probs[other] = apply_temperature(raw[other], fit["temperature"], positive=positive)
        y_pred[other] = decide(probs[other], fit["threshold"], positive)
    return {"probs": probs, "y_pred": y_pred, "fits": fits, "half": half}


# ---------------------------------------------------------------------------- measuring

def site_metrics(y, probs, y_pred, class_names: list[str], positive: int | None, *, bootstrap: int = 1000,
                 seed: int = 0) -> dict:
    """n, ECE, accuracy (and for binary models sensitivity and specificity, with their counts) of decisions
    ``y_pred`` on probabilities ``probs``, with 95% percentile bootstrap intervals (``ci95``: accuracy and AUC
    as :func:`medclf_core.trust.metrics.bootstrap_intervals`, plus ECE, sensitivity and specificity)."""
    y, y_pred = np.asarray(y, dtype=int), np.asarray(y_pred, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    out = {"n": int(len(y)), "ece": expected_calibration_error(y, probs) if len(y) else None,
           "accuracy": float(np.mean(y == y_pred)) if len(y) else None}
    binary = len(class_names) == 2 and positive is not None
    if binary:
        out.update(_rates(y, y_pred, positive))
    if bootstrap and len(y) > 1:
        ci = bootstrap_intervals(y, probs, y_pred, len(class_names), positive, n_boot=bootstrap, seed=seed)
        ci.update(_bootstrap_rates(y, probs, y_pred, positive if binary else None, bootstrap, seed))
        out["ci95"] = ci
    return out


def _rates(y: np.ndarray, y_pred: np.ndarray, positive: int) -> dict:
    pos, neg = y == positive, y != positive
    tp, tn = int(np.sum(pos & (y_pred == positive))), int(np.sum(neg & (y_pred != positive)))
    return {"sensitivity": tp / int(pos.sum()) if pos.any() else None, "n_positive": int(pos.sum()),
            "specificity": tn / int(neg.sum()) if neg.any() else None, "n_negative": int(neg.sum())}


def _bootstrap_rates(y, probs, y_pred, positive: int | None, n_boot: int, seed: int) -> dict:
    """Percentile 95% intervals of ECE (and sensitivity, specificity) over bootstrap resamples."""
    rng = np.random.default_rng(seed + 1)
    draws: dict[str, list[float]] = {"ece": [], "sensitivity": [], "specificity": []}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        draws["ece"].append(expected_calibration_error(y[idx], probs[idx]))
        if positive is not None:
            for k, v in _rates(y[idx], y_pred[idx], positive).items():
                if k in draws and v is not None:
                    draws[k].append(v)
    return {k: [float(v) for v in np.percentile(d, [2.5, 97.5])] if len(d) >= n_boot // 2 else None
            for k, d in draws.items() if k == "ece" or positive is not None}


# ---------------------------------------------------------------------------- the record

def site_calibration(name: str, y, raw_probs, card: Mapping, *,
                     target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY, min_temperature: float = MIN_TEMPERATURE,
                     dataset: str | None = None, fingerprint: str | None = None, bootstrap: int = 1000,
                     seed: int = 0) -> dict:
    """The site record (what :func:`save_site` writes): the fit on all images, the card's calibration on them
    (``before``) and the cross-fitted held-out result (``after``). ``raw_probs`` are the model's own
    probabilities (no temperature), ``y`` the class indices of the card's ``class_names``."""
    check_site_name(name)
    names = list(card.get("class_names") or [])
    y, raw = np.asarray(y, dtype=int), np.asarray(raw_probs, dtype=np.float64)
    if raw.ndim != 2 or raw.shape != (len(y), len(names)):
        raise ValueError(f"probabilities must have shape ({len(y)}, {len(names)}), not {raw.shape}")
    positive = positive_class_index(names, card.get("positive_class")) if len(names) == 2 else None
    counts = {c: int(np.sum(y == i)) for i, c in enumerate(names)}
    present = [c for c, k in counts.items() if k]
    if len(present) < 2 or min(counts[c] for c in present) < 2 * MIN_PER_CLASS:
        raise ModelError(f"A site calibration needs at least {2 * MIN_PER_CLASS} labelled images of each of at least "
                         f"two classes (this data has {', '.join(f'{c} {k}' for c, k in counts.items())}).")
    kw = {"target_sensitivity": target_sensitivity, "min_temperature": min_temperature}
    fit = fit_site(y, raw, positive, **kw)
    held = cross_fit(y, raw, positive, seed=seed, **kw)
    card_t, card_thr = temperature_of(card), card.get("threshold") if positive is not None else None
    before_p = apply_temperature(raw, card_t, positive=positive)
    measure = {"class_names": names, "positive": positive, "bootstrap": bootstrap, "seed": seed}
    return {
        "site": name, "model": card.get("name"), "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": dataset, "fingerprint": fingerprint, "n": int(len(y)), "n_per_class": counts,
        "temperature": fit["temperature"], "threshold": fit["threshold"],
        "positive_class": names[positive] if positive is not None else None,
        "target": {"metric": "sensitivity", "value": float(target_sensitivity)} if positive is not None else None,
        "rule": {"temperature": TEMPERATURE_RULE.format(min_temperature),
                 "threshold": THRESHOLD_RULE.format(names[positive], target_sensitivity) if positive is not None
                 else "none: a multi-class model decides by the most probable class",
                 "check": f"cross-fitted on two stratified halves (seed {seed}): each half measured with the fit on "
                          "the other, the held-out results pooled"},
        "cross_fit": [{"temperature": f["temperature"], "threshold": f["threshold"]} for f in held["fits"]],
        "before": {"calibration": "card", "temperature": card_t, "threshold": card_thr,
                   **_measured(y, before_p, decide(before_p, card_thr, positive), **measure)},
        "after": {"calibration": f"site:{name}", **_measured(y, held["probs"], held["y_pred"], **measure)},
        "medclf_version": __version__,
    }


def _measured(y, probs, y_pred, *, class_names, positive, bootstrap, seed) -> dict:
    return site_metrics(y, probs, y_pred, class_names, positive, bootstrap=bootstrap, seed=seed)


def apply_site(raw_probs, record: Mapping, positive: int | None = None) -> np.ndarray:
    """The model's raw probabilities ``(N, K)`` calibrated by a site record's temperature."""
    return apply_temperature(raw_probs, record.get("temperature"), positive=positive)


# ---------------------------------------------------------------------------- on disk

def site_path(run_dir: str | os.PathLike, name: str) -> Path:
    """``<run_dir>/sites/<name>.json`` (the name checked first: it can never leave the folder)."""
    return Path(run_dir) / SITES_DIR / f"{check_site_name(name)}.json"


def save_site(run_dir: str | os.PathLike, record: Mapping) -> Path:
    """Write a site record atomically to ``<run_dir>/sites/<site>.json`` (replacing that site's earlier one);
    the weights and the card are not touched."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir} is not a model run folder.")
    path = site_path(run_dir, record.get("site"))
    try:
        path.parent.mkdir(exist_ok=True)
        write_json(path, dict(record))
    except OSError as exc:
        raise ModelError(f"The site calibration could not be saved in {path.parent} ({exc.strerror or exc}).") \
            from None
    return path


def list_sites(run_dir: str | os.PathLike | None) -> list[str]:
    """The names of a run's usable site calibrations, sorted (damaged or incomplete files are left out)."""
    if not run_dir:
        return []
    folder = Path(run_dir) / SITES_DIR
    try:
        files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    except OSError:
        return []
    return [p.stem for p in files if _usable(read_json(folder, p.name), p.stem)]


def _usable(rec, stem: str) -> bool:
    t = rec.get("temperature") if isinstance(rec, dict) else None
    thr = rec.get("threshold") if isinstance(rec, dict) else None
    return (isinstance(rec, dict) and rec.get("site") == stem and isinstance(t, int | float) and np.isfinite(t)
            and t > 0 and (thr is None or (isinstance(thr, int | float) and 0.0 <= thr <= 1.0)))


def load_site(run_dir: str | os.PathLike, name: str, *, model: str | None = None) -> dict:
    """The site record ``name`` of a run; an unknown or damaged one is a :class:`ModelError` naming the known ones."""
    path = site_path(run_dir, name)
    rec = read_json(path.parent, path.name)
    if not _usable(rec, name):
        known = list_sites(run_dir)
        what = f"model '{model}'" if model else f"the model in {run_dir}"
        raise ModelError(f"No site calibration '{name}' for {what} (known sites: {', '.join(known) or 'none'}; "
                         "make one with `medclf recalibrate MODEL DATA --site NAME`).")
    return rec


def site_overlap_message(record: Mapping | None, fingerprint: str | None) -> str | None:
    """A warning when the images evaluated are the ones the site calibration was fitted on (the same dataset
    fingerprint, :func:`medclf_core.data.fingerprint.dataset_fingerprint`): its temperature and threshold were
    chosen on them, so metrics there flatter it. None for another dataset or no site.

    >>> site_overlap_message({"site": "north", "n": 100, "fingerprint": "ab"}, "ab")[:60]
    "These are the images site 'north' was calibrated on (the sam"
    >>> site_overlap_message({"site": "north", "fingerprint": "ab"}, "cd") is None
    True
    """
    if not record or not fingerprint or record.get("fingerprint") != fingerprint:
        return None
    return (f"These are the images site '{record['site']}' was calibrated on (the same dataset fingerprint; "
            f"n = {record.get('n')}): its temperature and threshold were chosen on them, so these figures are not "
            "an independent check of it. Evaluate on other images of the site, or read the cross-fitted figures "
            "in its record.")


def site_card(card: Mapping, record: Mapping) -> Mapping:
    """A copy of a model's ``card`` that reads as calibrated by the site ``record``: its calibration temperature
    and (two-class model) threshold are the site's, ``site_calibration`` names the site, and the temperature
    already applied to the stored test predictions is kept, so every reader of a card (the Evaluate page,
    :func:`~medclf_core.trust.calibration.stored_probabilities`, result keys, reports) gets the site's numbers
    without a branch of its own.

    >>> card = {"class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.7,
    ...         "calibration": {"temperature": 0.8, "stored_predictions": "calibrated"}}
    >>> c = site_card(card, {"site": "north", "temperature": 1.5, "threshold": 0.4, "date": "2026-12-06",
    ...                      "rule": {"threshold": "sensitivity >= 0.95"}})
    >>> c["threshold"], c["calibration"]["temperature"], c["calibration"]["stored_temperature"], card["threshold"]
    (0.4, 1.5, 0.8, 0.7)

    The copy is of the card's own type (a :class:`~medclf_core.registry.card.ModelCard` stays one, with its
    attributes such as ``class_names``; a plain dict stays a dict).
    """
    out = copy.copy(card) if isinstance(card, dict) else dict(card)
    cal = dict(card.get("calibration") or {})
    if cal.get("stored_predictions") == "calibrated":  # what evaluation.json holds does not change with the site
        cal["stored_temperature"] = stored_temperature(card)
    cal["temperature"] = float(record["temperature"])
    out["calibration"] = cal
    out["site_calibration"] = {k: record.get(k) for k in ("site", "date", "temperature", "threshold")}
    out["site_calibration"]["check"] = check_note(record)
    if len(card.get("class_names") or []) == 2:
        out["site_calibration"]["card_threshold"] = card.get("threshold")  # where the card's own figures were measured
        out["threshold"] = record.get("threshold")
        out["threshold_method"] = f"site '{record['site']}'"  # not the card's rule (e.g. "balanced")
        out["threshold_rule"] = {"method": "site", "chosen_for": (record.get("rule") or {}).get("threshold"),
                                 "on": f"the images of site '{record['site']}', site-calibrated probabilities"}
    return out


def metric_texts(m: Mapping) -> list[str]:
    """``ECE 0.031 (95% CI ...)``, ``accuracy ...``, ``sensitivity ...``, ``specificity ...`` of a site record's
    ``before`` or ``after`` block, each with its n and interval (:func:`medclf_core.formatting.metric_with_n`: no
    interval whose ends print the same, as a bootstrap gives when every image was right, and a warning below 30).

    >>> metric_texts({"n": 40, "n_positive": 20, "accuracy": 1.0, "ci95": {"accuracy": [1.0, 1.0]}})
    ['accuracy 1.000 (n = 40)']
    """
    ci = m.get("ci95") or {}
    return [f"{'ECE' if key == 'ece' else key} {metric_with_n(m[key], ci.get(key), n)}"
            for key, n in (("ece", m["n"]), ("accuracy", m["n"]), ("sensitivity", m.get("n_positive")),
                           ("specificity", m.get("n_negative"))) if key in m]


def calibration_caption(card: Mapping, site: Mapping | None = None) -> str:
    """One line saying which calibration a result used: the site's (its T, threshold, target and n), else the
    card's in the words the PDF report uses (:func:`medclf_core.trust.calibration.calibration_in_use`).

    >>> calibration_caption({"calibration": {"temperature": 1.03, "fitted_on": "val"}})
    "Calibration in use: temperature scaling, T = 1.03, fitted on the model's validation split."
    """
    if site:
        target = site.get("target") or {}
        thr = (f", threshold {number(site['threshold'])} on P({site.get('positive_class')}) for "
               f"{target.get('metric')} {number(target.get('value'), 2)}") if site.get("threshold") is not None else ""
        check = f" Its own check: {note}." if (note := check_note(site)) else ""
        return (f"Calibration: site '{site['site']}' (T = {number(site['temperature'], 2)}{thr}; fitted on "
                f"{site.get('n')} of the site's own images, {str(site.get('date') or '')[:10]}), not the model "
                f"card's.{check}")
    return f"Calibration in use: {calibration_in_use(card)}."


def calibration_label(record: Mapping | None) -> str:
    """``"card"`` or ``"site:<name>"``: which calibration a result used."""
    return f"site:{record['site']}" if record else "card"
