"""Selective prediction: accuracy against coverage when images are deferred to a human.

A site that lets a reader take the cases the model is least sure about (or that look least like
its training images) answers fewer images, more accurately. :func:`selective_prediction` gives,
for each *ordering* of the images (which go to the human first):

- ``"confidence"`` (least confident first): for a binary model with an operating threshold, the
  smallest distance to it in log-odds, ``|logit(P(positive)) - logit(threshold)|`` (P and the threshold
  clipped to [1e-6, 1 - 1e-6]): equal evidence either side of the threshold counts the same, so at a
  threshold of 0.77 a NORMAL call at P = 0.15 is not more confident than a PNEUMONIA call at P = 0.999
  (the plain distance ``|P - threshold|`` said it was); the lowest top-class probability otherwise;
- ``"unfamiliar"`` (most unfamiliar first): the highest out-of-distribution score (``ood_score``;
  a missing score counts as the most unfamiliar); absent when no image has a score,

the risk-coverage curve (coverage, accuracy, risk = 1 - accuracy, images kept), its area (AURC:
the mean selective risk over every number of kept images, lower is better), the oracle's area
(errors deferred first: the best any ordering can do) and the excess over it, and a table at
coverage 1.0, 0.95, 0.9 and 0.8 with accuracy, sensitivity, specificity and the images kept,
each with a 95% percentile bootstrap interval (the resample is re-ordered and cut again).

**Coverage** is the share of *all* images the model answers. Refused images (``ood`` True: no
finding is shown for them) are always deferred first, before either ordering applies, so at any
coverage at or below ``accepted_coverage`` (1 - share refused) none of them is answered; above it
some refused images are answered with the model's output, as the top-level metrics over every
image do (coverage 1.0 = those metrics; a table row says ``includes_refused`` then).

**Ties** (equal scores: a saturated model gives many) are deferred as a group: within a tied group
the curve and the table take the expected value over every order of the group (a fractional share
of each tied image is kept), so a result never depends on the order of the files. Empty data, a
single class and a cut that keeps no image give None (never NaN), never an exception.

Example::

    >>> import numpy as np
    >>> y = np.array([0, 1, 0, 1]); p1 = np.array([0.1, 0.45, 0.55, 0.9])   # the middle two are wrong
    >>> probs = np.stack([1 - p1, p1], axis=1); y_pred = (p1 >= 0.5).astype(int)
    >>> s = selective_prediction(y, probs, y_pred, threshold=0.5, positive=1, bootstrap=0)
    >>> c = s["orderings"]["confidence"]
    >>> c["curve"]["accuracy"], round(c["aurc"], 4), round(c["excess_aurc"], 4)
    ([1.0, 1.0, 0.66667, 0.5], 0.2083, 0.0)
"""

from __future__ import annotations

import numpy as np

from medclf_core.formatting import number

COVERAGES = (1.0, 0.95, 0.9, 0.8)
ORDERINGS = {"confidence": "least confident", "unfamiliar": "most unfamiliar"}
DEFINITION = ("coverage = share of all images answered; refused images (ood) are deferred first, then the "
              "ordering's images; tied scores are deferred together (expected value over their orders)")


def _logit(p):
    """Log-odds of ``p`` clipped to [1e-6, 1 - 1e-6] (finite for a saturated model's 0 and 1)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def deferral_scores(probs, *, threshold: float | None, positive: int | None, ood_score=None) -> dict:
    """Per ordering, one score per image, higher = deferred sooner; ``"unfamiliar"`` is None when no
    image has an OOD score.

    >>> deferral_scores(np.array([[0.2, 0.8], [0.6, 0.4]]), threshold=0.5, positive=1)["confidence"].round(2)
    array([-1.39, -0.41])
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2 and probs.shape[1] == 2 and threshold is not None and positive is not None:
        conf = -np.abs(_logit(probs[:, positive]) - _logit(threshold))
    else:
        conf = -probs.max(axis=1) if probs.size else np.zeros(len(probs))
    out = {"confidence": conf, "unfamiliar": None}
    if ood_score is not None and len(ood_score) == len(probs):
        raw = np.array([np.nan if s is None else float(s) for s in ood_score], dtype=np.float64)
        if np.isfinite(raw).any():
            out["unfamiliar"] = np.where(np.isfinite(raw), raw, np.inf)  # no score: the most unfamiliar
    return out


def _keep_order(score: np.ndarray, refused: np.ndarray):
    """The images from the last deferred (kept longest) to the first, and each position's tied group
    as ``(start, end)`` positions: accepted before refused, lower score before higher."""
    order = np.lexsort((score, refused))
    s, r = score[order], refused[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (s[1:] != s[:-1]) | (r[1:] != r[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(order))
    group = np.cumsum(new) - 1
    return order, starts[group], ends[group]


def _kept_weights(score, refused, ks) -> list[np.ndarray]:
    """How much of each image is kept when ``k`` are answered, for each ``k`` of ``ks``: 1 or 0, a
    fraction within the tied group that the cut falls in (one sort for every ``k``)."""
    n = len(score)
    if n == 0:
        return [np.zeros(0) for _ in ks]
    order, start, end = _keep_order(score, refused)
    out = []
    for k in ks:
        w = np.zeros(n)
        w[order] = np.clip((k - start) / (end - start), 0.0, 1.0)  # 1 before the cut's group, 0 after it
        out.append(w)
    return out


def _rates(w, correct, pos, binary: bool) -> dict:
    """Accuracy, sensitivity and specificity of the kept share ``w`` (None where nothing is kept)."""
    kept = w.sum()
    out = {"accuracy": float((w * correct).sum() / kept) if kept > 1e-12 else None}
    for key, mask in (("sensitivity", pos), ("specificity", ~pos)):
        d = (w * mask).sum()
        out[key] = float((w * correct * mask).sum() / d) if binary and d > 1e-12 else None
    return out


def risk_coverage(correct, score, refused=None, max_points: int = 200) -> dict:
    """The curve, AURC and the oracle's AURC for one ordering (``correct``: 0/1 per image).

    ``curve`` has ``coverage``, ``accuracy``, ``risk`` and ``n_kept`` for 1 to n kept images
    (thinned to about ``max_points``, always keeping both ends); ``aurc`` is the mean risk over
    every k = 1..n, ``aurc_oracle`` that of the errors deferred first, ``excess_aurc`` the difference.
    """
    correct = np.asarray(correct, dtype=np.float64)
    n = len(correct)
    refused = np.zeros(n, dtype=bool) if refused is None else np.asarray(refused, dtype=bool)
    if n == 0:
        return {"curve": {"coverage": [], "accuracy": [], "risk": [], "n_kept": []},
                "aurc": None, "aurc_oracle": None, "excess_aurc": None}
    order, start, end = _keep_order(np.asarray(score, dtype=np.float64), refused)
    c = correct[order]
    cum = np.concatenate([[0.0], np.cumsum(c)])
    k = np.arange(1, n + 1)
    group_correct = cum[end] - cum[start]
    right_kept = cum[start] + (k - start) * group_correct / (end - start)  # k-th kept falls in its group
    acc = right_kept / k
    oracle = np.maximum(0.0, k - correct.sum()) / k
    aurc, aurc_oracle = float(np.mean(1 - acc)), float(np.mean(oracle))
    keep = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return {"curve": {"coverage": (k[keep] / n).round(5).tolist(), "accuracy": acc[keep].round(5).tolist(),
                      "risk": (1 - acc[keep]).round(5).tolist(), "n_kept": k[keep].tolist()},
            "aurc": aurc, "aurc_oracle": aurc_oracle, "excess_aurc": aurc - aurc_oracle}


def _interval(values, n_boot: int, alpha: float = 0.05):
    """Percentile interval of the defined values; None when under half the resamples gave one."""
    vals = [v for v in values if v is not None]
    if not vals or len(vals) < n_boot / 2:
        return None
    return [float(v) for v in np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])]


def coverage_table(correct, pos, score, refused, *, binary: bool, coverages=COVERAGES, bootstrap: int = 1000,
                   seed: int = 0) -> list[dict]:
    """One row per coverage: ``coverage``, ``n_kept`` (round(coverage x n)), ``includes_refused``,
    accuracy, sensitivity, specificity and their ``ci95`` (bootstrap resamples of the images)."""
    correct, pos = np.asarray(correct, dtype=np.float64), np.asarray(pos, dtype=bool)
    score, refused = np.asarray(score, dtype=np.float64), np.asarray(refused, dtype=bool)
    n, n_accepted = len(correct), int((~refused).sum())
    ks = [int(round(cov * n)) for cov in coverages]
    rows = [{"coverage": float(cov), "n_kept": k, "includes_refused": k > n_accepted,
             **_rates(w, correct, pos, binary), "ci95": None}
            for cov, k, w in zip(coverages, ks, _kept_weights(score, refused, ks), strict=True)]
    if bootstrap and n > 1:
        rng = np.random.default_rng(seed)
        draws = [{m: [] for m in ("accuracy", "sensitivity", "specificity")} for _ in rows]
        for _ in range(bootstrap):
            idx = rng.integers(0, n, n)
            for d, w in zip(draws, _kept_weights(score[idx], refused[idx], ks), strict=True):
                for m, v in _rates(w, correct[idx], pos[idx], binary).items():
                    d[m].append(v)
        for r, d in zip(rows, draws, strict=True):
            r["ci95"] = {m: _interval(v, bootstrap) for m, v in d.items()}
    return rows


def selective_prediction(y_true, probs, y_pred, *, threshold: float | None, positive: int | None,
                         ood_score=None, refused=None, coverages=COVERAGES, bootstrap: int = 1000,
                         seed: int = 0) -> dict:
    """``evaluate``'s ``"selective"`` entry (see the module docstring).

    ``probs`` calibrated as stored, ``y_pred`` the decisions at the operating ``threshold``
    (binary, on P(``positive``)), ``ood_score`` and ``refused`` (``ood`` flags, None = not
    checked) per image when the results have them. Returns ``{"n", "n_refused",
    "accepted_coverage", "definition", "orderings": {"confidence": {...}, "unfamiliar": {...} or None}}``,
    each ordering ``{"label", "curve", "aurc", "aurc_oracle", "excess_aurc", "table"}``.
    """
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    n = len(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != n or len(y_pred) != n:
        raise ValueError(f"probabilities must have one row per image ({n}), and one decision each")
    flags = np.array([f is True for f in refused], dtype=bool) if refused is not None else np.zeros(n, bool)
    if len(flags) != n:
        raise ValueError(f"refused must have one flag per image ({n}), not {len(flags)}")
    binary = probs.shape[1] == 2 and positive is not None
    correct = (y_true == y_pred).astype(np.float64)
    pos = y_true == positive if binary else np.zeros(n, dtype=bool)
    scores = deferral_scores(probs, threshold=threshold, positive=positive, ood_score=ood_score)
    orderings = {}
    for key, score in scores.items():
        if score is None:
            orderings[key] = None
            continue
        orderings[key] = {"label": ORDERINGS[key], **risk_coverage(correct, score, flags),
                          "table": coverage_table(correct, pos, score, flags, binary=binary, coverages=coverages,
                                                  bootstrap=bootstrap, seed=seed)}
    n_refused = int(flags.sum())
    return {"n": n, "n_refused": n_refused, "accepted_coverage": (n - n_refused) / n if n else None,
            "definition": DEFINITION, "orderings": orderings}


def _deferred_who(n_deferred: int, n: int, refused: int, label: str) -> str:
    """Which images deferring ``n_deferred`` of ``n`` sends to the reader: refused ones first, then ``label``'s."""
    share = f"{round(100 * n_deferred / n)}%"
    if not refused:
        return f"the {label} image ({share})" if n_deferred == 1 else f"the {n_deferred} {label} images ({share})"
    head = f"{n_deferred} image{'s' if n_deferred != 1 else ''} ({share}): "
    if n_deferred > refused:
        return head + f"the {refused} refused, then the {n_deferred - refused} {label}"
    if n_deferred == refused:
        return head + f"the {refused} refused"
    left = refused - n_deferred
    return head + (f"{n_deferred} of the {refused} refused ({left} refused image{'s' if left != 1 else ''} still "
                   "answered, with the model's output)")


def deferral_sentence(selective: dict | None, ordering: str = "confidence", coverage: float = 0.9) -> str | None:
    """One line such as ``deferring the 20 least confident images (10%): accuracy 0.910 -> 0.950 (n 180 of 200)``
    that gives the images really deferred at ``coverage`` (round(coverage x n) are kept), refused ones
    first; None when the ordering or the row is missing.

    >>> s = {"n": 200, "n_refused": 0, "orderings": {"confidence": {"label": "least confident", "table": [
    ...     {"coverage": 1.0, "n_kept": 200, "accuracy": 0.91}, {"coverage": 0.9, "n_kept": 180, "accuracy": 0.95}]}}}
    >>> deferral_sentence(s)
    'deferring the 20 least confident images (10%): accuracy 0.910 -> 0.950 (n 180 of 200)'
    >>> s = {"n": 14, "n_refused": 2, "orderings": {"confidence": {"label": "least confident", "table": [
    ...     {"coverage": 1.0, "n_kept": 14, "accuracy": 0.786}, {"coverage": 0.9, "n_kept": 13, "accuracy": 0.846}]}}}
    >>> deferral_sentence(s)
    "deferring 1 image (7%): 1 of the 2 refused (1 refused image still answered, with the model's output): \
accuracy 0.786 -> 0.846 (n 13 of 14)"
    """
    o = ((selective or {}).get("orderings") or {}).get(ordering)
    rows = {r["coverage"]: r for r in (o or {}).get("table", [])}
    if not o or 1.0 not in rows or coverage not in rows:
        return None
    n, kept = selective["n"], rows[coverage]["n_kept"]
    before = f"accuracy {number(rows[1.0]['accuracy'])}"
    if kept >= n:
        return (f"{round(100 * (1 - coverage))}% of {n} images is less than one image: none deferred, {before} "
                f"(n {n} of {n})") if n else None
    who = _deferred_who(n - kept, n, selective.get("n_refused") or 0, o["label"])
    return f"deferring {who}: {before} -> {number(rows[coverage]['accuracy'])} (n {kept} of {n})"


def deferral_caption(selective: dict | None, ordering: str = "confidence") -> str:
    """The Evaluate page's words under the chart: :func:`deferral_sentence` and what coverage means."""
    line = deferral_sentence(selective, ordering) or "deferring 10%: not available for these images"
    return (f"{line[0].upper()}{line[1:]}. Coverage is the share of all images the model answers; refused images "
            "are deferred first, then this ordering's, images with equal scores together.")
