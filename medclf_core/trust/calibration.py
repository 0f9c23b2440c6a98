"""Calibrated probabilities: temperature scaling and the expected calibration error (numpy/scipy only).

A network's softmax output is often over-confident. *Temperature scaling*
(Guo et al. 2017) divides the logits by one number ``T`` fitted on validation
data by minimising the negative log-likelihood. medclf models output
probabilities, not logits, so the temperature is applied to log-probabilities:
``p_i ** (1 / T)`` renormalised, which equals ``softmax(logits / T)`` (the
log-probabilities differ from the logits by a per-row constant). ``T > 1``
softens, ``T < 1`` sharpens; it never changes which class is most probable, and
for two classes it is a monotone map of ``P(positive)``, so a threshold maps
exactly (:func:`map_threshold`).

:func:`expected_calibration_error` is the top-label ECE with equal-width bins:
``sum_b n_b / N * |accuracy_b - confidence_b|``; :func:`reliability_bins` gives
the per-bin numbers a reliability diagram draws.

The calibration a run records in its card: :func:`calibration_entry` writes the card's
``"calibration"`` entry, :func:`temperature_of` reads the temperature back, and
:func:`stored_probabilities` scales the probabilities stored in ``evaluation.json`` as the
Predictor scales its own.

Example::

    >>> import numpy as np
    >>> y = np.array([0, 1, 1, 0])
    >>> p = np.array([[0.99, 0.01], [0.02, 0.98], [0.97, 0.03], [0.9, 0.1]])
    >>> t = fit_temperature(y, p)
    >>> t > 1.0                      # over-confident and once wrong: soften
    True
    >>> apply_temperature(p, t).sum(axis=1).round(6).tolist()
    [1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medclf_core.registry.card import positive_class_index

EPS = 1e-12
T_MIN, T_MAX = 0.05, 20.0


def _as_probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (N, K) with K >= 2, not {p.shape}")
    return p


def apply_temperature(probs, temperature: float | None, *, positive: int | None = None) -> np.ndarray:
    """Probabilities ``(N, K)`` with temperature ``T`` applied: ``p ** (1/T)`` renormalised per row.

    ``temperature`` None or 1 returns the probabilities unchanged (as float64).
    For two classes the result is computed from the ``positive`` column alone (default 1):
    ``sigmoid(logit(p_pos) / T)``, the same value up to rounding, so that a binary
    decision ``p_pos >= threshold`` is kept exactly by :func:`map_threshold` even for an
    image whose probability equals the threshold (a float32 softmax's two columns do not
    add up to exactly 1).
    """
    p = _as_probs(probs)
    if temperature is None or float(temperature) == 1.0 or len(p) == 0:
        return p.copy()
    t = float(temperature)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a positive number, not {temperature}")
    if p.shape[1] == 2:
        pos = 1 if positive is None else int(positive)
        q = np.clip(p[:, pos], EPS, 1.0 - EPS)
        c = 1.0 / (1.0 + np.exp(-(np.log(q) - np.log1p(-q)) / t))
        out = np.empty_like(p)
        out[:, pos], out[:, 1 - pos] = c, 1.0 - c
        return out
    return softmax(np.log(np.clip(p, EPS, 1.0)) / t, axis=1)


def softmax(z, axis: int = -1) -> np.ndarray:
    """``exp(z) / sum(exp(z))`` along ``axis`` in float64, stable for large logits (the maximum is taken
    out first). The one softmax of the package: probabilities from a head's logits, Score-CAM's masked
    scores, cross-fitted heads' out-of-fold predictions and temperature scaling all use it.

    >>> softmax(np.array([[0.0, 0.0], [1000.0, 0.0]])).round(6).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    """
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def negative_log_likelihood(y_true, probs, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes after temperature scaling."""
    y = np.asarray(y_true, dtype=int)
    p = apply_temperature(probs, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))


def fit_temperature(y_true, probs, *, lower: float = T_MIN) -> float:
    """The temperature in [``lower``, 20] that minimises the NLL of ``y_true`` under ``probs`` (validation data).

    Returns 1.0 (no change) for fewer than two samples. Bounded scalar search on
    ``log T`` (scipy), so the result is deterministic. ``lower=1.0`` never sharpens: a
    near-perfect validation set cannot turn the model's own probabilities into certainty.
    """
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, dtype=int)
    p = _as_probs(probs)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} rows of probabilities")
    if len(y) < 2:
        return 1.0
    logp = np.log(np.clip(p, EPS, 1.0))
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y]))

    lower = float(np.clip(lower, T_MIN, T_MAX))
    res = minimize_scalar(nll, bounds=(np.log(lower), np.log(T_MAX)), method="bounded",
                          options={"xatol": 1e-6})
    t = float(np.exp(res.x))
    # keep T = 1 when it is as good (no change for an already calibrated model)
    return 1.0 if lower <= 1.0 and nll(0.0) <= res.fun + 1e-12 else t


def map_threshold(threshold: float | None, temperature: float | None) -> float | None:
    """A binary threshold on raw ``P(positive)`` mapped to the same decision on calibrated probabilities.

    Temperature scaling of two classes is a strictly increasing map of ``P(positive)``,
    so ``p >= t`` exactly when ``f(p) >= f(t)`` (``f`` computed by :func:`apply_temperature`
    from the positive column, with the same floating-point operations).
    """
    if threshold is None or temperature is None or float(temperature) == 1.0:
        return threshold
    t = float(np.clip(threshold, 0.0, 1.0))
    if t in (0.0, 1.0):
        return t
    return float(apply_temperature(np.array([[1.0 - t, t]]), temperature, positive=1)[0, 1])


def reliability_bins(y_true, probs, n_bins: int = 15) -> dict:
    """Top-label reliability per equal-width confidence bin.

    Returns ``{"edges" (n_bins + 1), "confidence", "accuracy", "count"}`` (per bin;
    confidence and accuracy are None for an empty bin). A confidence of exactly 0
    falls in the first bin; bins are ``(lo, hi]`` otherwise.
    """
    y = np.asarray(y_true, dtype=int)
    p = _as_probs(probs)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} rows of probabilities")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    out = {"edges": edges.round(6).tolist(), "confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out["count"].append(n)
        out["confidence"].append(float(conf[m].mean()) if n else None)
        out["accuracy"].append(float(correct[m].mean()) if n else None)
    return out


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float | None:
    """Top-label expected calibration error with ``n_bins`` equal-width bins (None for no samples)."""
    bins = reliability_bins(y_true, probs, n_bins)
    total = sum(bins["count"])
    if not total:
        return None
    return float(sum(n / total * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"],
                                                               strict=True) if n))


# ---------------------------------------------------------------------------- calibration in the card

def calibration_entry(temperature: float, y_val, raw_val_probs, *, threshold: float | None = None,
                      stored_predictions: str = "raw", method: str = "temperature scaling (validation NLL)",
                      fitted_on: str = "val") -> dict:
    """The card's ``"calibration"`` entry for a temperature fitted on validation data.

    ``raw_val_probs`` are the model's own validation probabilities (before scaling).
    ``threshold`` is the card's binary threshold on *calibrated* probabilities; the entry
    records it mapped back (``threshold_uncalibrated``), so a later refit maps it exactly.
    ``stored_predictions`` says whether the probabilities in ``evaluation.json`` are
    ``"raw"`` (the model's own: the app applies the temperature to show them) or
    ``"calibrated"`` (already scaled by this temperature). ``method`` and ``fitted_on`` say how and on what
    the temperature was chosen (a small-data run: out-of-fold predictions, or the rule T = 1).

    Example::

        >>> e = calibration_entry(2.0, [0, 1], np.array([[0.9, 0.1], [0.3, 0.7]]), threshold=0.4)
        >>> e["temperature"], round(e["threshold_uncalibrated"], 4)
        (2.0, 0.3077)
    """
    cal = apply_temperature(raw_val_probs, temperature)
    return {"method": method, "temperature": float(temperature), "fitted_on": fitted_on, "n": int(len(np.asarray(y_val))),
            "val_nll": [negative_log_likelihood(y_val, raw_val_probs), negative_log_likelihood(y_val, cal)],
            "val_ece": [expected_calibration_error(y_val, raw_val_probs), expected_calibration_error(y_val, cal)],
            "threshold_uncalibrated": map_threshold(threshold, 1.0 / float(temperature)),
            "stored_predictions": stored_predictions}


def temperature_of(card: Mapping) -> float | None:
    """The card's calibration temperature, or None for an uncalibrated (older) card."""
    return _positive((card.get("calibration") or {}).get("temperature"))


def calibration_in_use(card: Mapping) -> str:
    """The calibration behind a model's probabilities, in words, from the card's ``"calibration"`` entry:
    method, temperature and what it was fitted on (the Predict page and the PDF report say it).

    >>> calibration_in_use({"calibration": {"method": "temperature scaling (validation NLL)", "temperature": 1.0265,
    ...                                     "fitted_on": "val", "n": 779}})
    "temperature scaling (validation NLL), T = 1.03, fitted on the model's validation split (n = 779)"
    >>> calibration_in_use({})
    "none: the model's own probabilities (uncalibrated)"
    """
    site = card.get("site_calibration")  # a card as a site-calibrated Predictor holds it (trust.sites)
    if isinstance(site, Mapping) and site.get("site"):
        thr = f", threshold {site['threshold']:.3g}" if isinstance(site.get("threshold"), (int, float)) else ""
        check = f"; {site['check']}" if site.get("check") else ""  # trust.site_checks.check_note
        return (f"site '{site['site']}': T = {site.get('temperature', float('nan')):.3g}{thr}, fitted on the site's "
                f"own images ({str(site.get('date') or '')[:10]}), not the model card's{check}")
    cal = card.get("calibration") or {}
    t = _positive(cal.get("temperature"))
    if t is None:
        return "none: the model's own probabilities (uncalibrated)"
    where = cal.get("fitted_on")
    where = "the model's validation split" if where == "val" else str(where or "not recorded")
    said = isinstance(cal.get("n"), int) and f"({cal['n']} images)" in where  # a cross-validated fit says it
    n = f" (n = {cal['n']})" if isinstance(cal.get("n"), int) and not said else ""
    return f"{cal.get('method') or 'temperature scaling'}, T = {t:.3g}, fitted on {where}{n}"


def _positive(t) -> float | None:
    try:
        t = float(t)
    except (TypeError, ValueError):
        return None
    return t if np.isfinite(t) and t > 0 else None


def stored_temperature(card: Mapping) -> float | None:
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
    s = stored_temperature(card) or 1.0
    positive = positive_class_index(list(card.get("class_names") or []), card.get("positive_class"))
    return apply_temperature(probs, t / s, positive=positive)
