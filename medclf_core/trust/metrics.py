"""Metrics from predicted probabilities, with scikit-learn doing the arithmetic.

:func:`evaluate_probabilities` turns ``(y_true, probs)`` into one JSON-ready dict:
accuracy, per-class precision/recall/F1/support, macro averages, ROC-AUC (binary,
or one-vs-rest macro for more classes) with ROC points, the confusion matrix (rows
true, columns predicted), and for binary tasks sensitivity and specificity at the
operating threshold. 95% bootstrap intervals are given for accuracy and AUC.
``ece`` is the top-label expected calibration error (15 equal-width bins, see
:mod:`medclf_core.trust.calibration`).

Binary decisions use a threshold on the probability of the *positive* class (the card's
``positive_class``, else the finding by name, :func:`medclf_core.registry.card.positive_class_index`:
``PNEUMONIA`` over ``NORMAL``, ``yes`` over ``no``). :func:`choose_threshold` picks the threshold
on validation data, by Youden's J or the highest threshold that reaches a target sensitivity.
(This is the arithmetic of a metric; evaluating a model on a folder is
:func:`medclf_core.inference.folder.evaluate_folder`, at the end of training
:mod:`medclf_core.training.evaluate`.)

Example::

    >>> import numpy as np
    >>> r = evaluate_probabilities([0, 1, 1], np.array([[.9, .1], [.2, .8], [.6, .4]]), ["NORMAL", "PNEUMONIA"])
    >>> r["accuracy"], r["confusion_matrix"]
    (0.6666666666666666, [[1, 0], [1, 1]])
"""

from __future__ import annotations

import numpy as np

from medclf_core.registry.card import positive_class_index
from medclf_core.trust.calibration import expected_calibration_error


def _skm():
    """scikit-learn's metrics, imported on first use: it takes about 1.5 s, which importing the trust or
    training layer (the CLI, the Train page) should not pay."""
    from sklearn import metrics

    return metrics


def decide(probs: np.ndarray, threshold: float | None, positive: int | None) -> np.ndarray:
    """Predicted class per row: threshold on the positive class for binary, argmax otherwise."""
    probs = np.asarray(probs, dtype=np.float64)
    if threshold is None or positive is None or probs.shape[1] != 2:
        return probs.argmax(axis=1)
    return np.where(probs[:, positive] >= threshold, positive, 1 - positive)


THRESHOLD_METHODS = ("balanced", "youden", "sensitivity")
THRESHOLD_RULES = {
    "balanced": "balanced sensitivity and specificity: the median, over 200 bootstrap resamples of the validation "
                "split, of the threshold that maximises Youden's J (sensitivity + specificity - 1), each halfway in "
                "log-odds between the two scores it separates, on calibrated probabilities",
    "youden": "the threshold that maximises Youden's J on the validation split (halfway, in log-odds, between "
              "the two validation scores it separates)",
    "sensitivity": "the highest threshold that keeps validation sensitivity at or above the target",
}


def choose_threshold(y_true, probs, positive: int, method: str = "balanced",
                     target_sensitivity: float = 0.95, seed: int = 0) -> float:
    """Operating threshold on P(positive), chosen on validation data.

    ``balanced`` (default) is Youden's J made less brittle: the single validation
    threshold that maximises J sits on one image's score, and a threshold chosen for
    a high validation sensitivity sits on the few lowest-scoring positives, so both
    move far with a handful of images (a 96%-sensitivity threshold of 0.14 gave 0.64
    specificity on another hospital's films). The median of the J-optimal thresholds
    over bootstrap resamples is the middle of the region where J is high.
    ``youden`` maximises sensitivity + specificity - 1 once, its threshold halfway in log-odds between
    the two validation scores it separates (:func:`_logit_midpoint`); ``sensitivity`` takes the
    highest threshold whose sensitivity is at least ``target_sensitivity``.
    Falls back to 0.5 when the data has a single class.

    Example::

        >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
        >>> 0.2 < choose_threshold([0, 0, 1, 1], probs, positive=1) <= 0.7
        True
    """
    y = (np.asarray(y_true) == positive).astype(int)
    score = np.asarray(probs, dtype=np.float64)[:, positive]
    if y.min() == y.max():
        return 0.5
    if method == "balanced":
        rng = np.random.default_rng(seed)
        picks = []
        for _ in range(200):
            idx = rng.integers(0, len(y), len(y))
            if y[idx].min() != y[idx].max():
                picks.append(choose_threshold(y[idx], probs[idx], 1, "youden") if positive == 1 else
                             choose_threshold(1 - y[idx], probs[idx], 0, "youden"))
        return float(np.median(picks)) if picks else choose_threshold(y_true, probs, positive, "youden")
    # every distinct score for Youden's J (its threshold is read against the next one down)
    fpr, tpr, thr = _skm().roc_curve(y, score, drop_intermediate=method != "youden")
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if method == "youden":
        j = tpr - fpr
        best = np.flatnonzero(j == j.max())[0]
        lower = thr[best + 1] if best + 1 < len(thr) else None
        return float(np.clip(thr[best] if lower is None else _logit_midpoint(lower, thr[best]), 0.0, 1.0))
    if method == "sensitivity":
        ok = np.flatnonzero(tpr >= target_sensitivity)
        return float(np.clip(thr[ok[0]], 0.0, 1.0)) if len(ok) else float(np.clip(thr[-1], 0.0, 1.0))
    raise ValueError(f"Unknown threshold method '{method}' (use one of {', '.join(THRESHOLD_METHODS)}).")


def _logit_midpoint(low: float, high: float, eps: float = 1e-7) -> float:
    """The probability halfway, in log-odds, between two scores: every threshold in ``(low, high]`` makes the
    same decisions on the data it was chosen on, and the edge ``high`` sits on one image's score (on a
    validation split the model separates, the least certain positive: the slightest shift off-source moves
    positives below it, a brain model's threshold of 0.94 gave sensitivity 0.68 on another source). The
    middle of the gap is the margin-maximising choice, as a support vector machine's boundary is.

        >>> round(_logit_midpoint(0.1, 0.9), 6), round(_logit_midpoint(0.001, 0.999999), 3)
        (0.5, 0.969)
    """
    lo, hi = (np.clip(np.float64(v), eps, 1 - eps) for v in (low, high))
    mid = (np.log(lo / (1 - lo)) + np.log(hi / (1 - hi))) / 2
    return float(1 / (1 + np.exp(-mid)))


def _auc(y_true: np.ndarray, probs: np.ndarray, n_classes: int, positive: int | None) -> float | None:
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if n_classes == 2:
        return float(_skm().roc_auc_score((y_true == positive).astype(int), probs[:, positive]))
    if len(present) < n_classes:
        return None
    return float(_skm().roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=list(range(n_classes))))


def bootstrap_intervals(y_true, probs, y_pred, n_classes: int, positive: int | None, *, n_boot: int = 1000,
                        seed: int = 0, alpha: float = 0.05, groups=None) -> dict[str, list[float] | None]:
    """Percentile bootstrap 95% intervals for accuracy and ROC-AUC, and for a two-class model with a ``positive``
    class also sensitivity and specificity (of the decisions ``y_pred``).

    ``groups`` (one key per image, for example a patient or case id): resample whole groups instead of
    images, so that images of one patient, which are not independent, do not make an interval look narrower
    than the data allow (a cluster bootstrap).

    >>> y = np.array([0, 0, 1, 1] * 10); probs = np.eye(2)[y]; wrong = y.copy(); wrong[:8] = 1 - wrong[:8]
    >>> by_image = bootstrap_intervals(y, probs, wrong, 2, 1)["accuracy"]
    >>> by_case = bootstrap_intervals(y, probs, wrong, 2, 1, groups=np.arange(40) // 8)["accuracy"]
    >>> by_case[1] - by_case[0] > by_image[1] - by_image[0]   # the 8 mistakes are one case
    True
    """
    rng = np.random.default_rng(seed)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if groups is None:
        def draw():
            return rng.integers(0, n, n)
    else:
        _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]

        def draw():
            return np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
    accs, aucs, rates = [], [], {"sensitivity": [], "specificity": []}
    binary = n_classes == 2 and positive is not None
    for _ in range(n_boot):
        idx = draw()
        accs.append(float(np.mean(y_true[idx] == y_pred[idx])))
        a = _auc(y_true[idx], probs[idx], n_classes, positive)
        if a is not None:
            aucs.append(a)
        if binary:
            sick, called = y_true[idx] == positive, y_pred[idx] == positive
            if sick.any():
                rates["sensitivity"].append(float(np.mean(called[sick])))
            if (~sick).any():
                rates["specificity"].append(float(np.mean(~called[~sick])))
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    out = {"accuracy": [float(v) for v in np.percentile(accs, q)] if accs else None,
           "auc": [float(v) for v in np.percentile(aucs, q)] if len(aucs) >= n_boot // 2 else None}
    if binary:
        out.update({k: [float(v) for v in np.percentile(d, q)] if len(d) >= n_boot // 2 else None
                    for k, d in rates.items()})
    return out


def roc_points(y_true, probs, class_names: list[str], positive: int | None, max_points: int = 200) -> dict:
    """ROC curves: ``{"<class>": {"fpr": [...], "tpr": [...], "thresholds": [...]}}`` (positive class only
    for binary tasks, one-vs-rest otherwise), thinned to at most ``max_points``."""
    y_true = np.asarray(y_true)
    classes = [positive] if len(class_names) == 2 else range(len(class_names))
    out = {}
    for c in classes:
        y = (y_true == c).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, thr = _skm().roc_curve(y, probs[:, c])
        if len(fpr) > max_points:
            keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
            fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
        thr = np.where(np.isfinite(thr), thr, 1.0)
        out[class_names[c]] = {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist(),
                               "thresholds": thr.round(5).tolist()}
    return out


def evaluate_probabilities(y_true, probs, class_names: list[str], *, threshold: float | None = None,
                           positive: int | None = None, bootstrap: int = 1000, seed: int = 0, groups=None) -> dict:
    """All metrics for one set of predictions; see the module docstring for the keys. ``groups`` (a key per
    image): the intervals resample whole groups (:func:`bootstrap_intervals`) and ``n_groups`` says how many."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(y_true), n_classes):
        raise ValueError(f"probabilities must have shape ({len(y_true)}, {n_classes}), not {probs.shape}")
    if positive is None:
        positive = positive_class_index(class_names)
    if n_classes != 2:
        threshold = None
    elif threshold is None:
        threshold = 0.5
    y_pred = decide(probs, threshold, positive)
    labels = list(range(n_classes))
    p, r, f, s = _skm().precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    cm = _skm().confusion_matrix(y_true, y_pred, labels=labels)
    result = {
        "n": int(len(y_true)),
        "class_names": list(class_names),
        "accuracy": float(_skm().accuracy_score(y_true, y_pred)) if len(y_true) else None,
        "balanced_accuracy": float(_skm().balanced_accuracy_score(y_true, y_pred)) if len(np.unique(y_true)) > 1 else None,
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, c in enumerate(class_names)},
        "macro_precision": float(np.mean(p)),
        "macro_recall": float(np.mean(r)),
        "macro_f1": float(np.mean(f)),
        "auc": _auc(y_true, probs, n_classes, positive),
        "confusion_matrix": cm.astype(int).tolist(),
        "threshold": threshold,
        "positive_class": class_names[positive] if positive is not None else None,
        "roc": roc_points(y_true, probs, class_names, positive),
        "ece": expected_calibration_error(y_true, probs) if len(y_true) else None,
    }
    if n_classes == 2:
        tp, fn = cm[positive, positive], cm[positive, 1 - positive]
        tn, fp = cm[1 - positive, 1 - positive], cm[1 - positive, positive]
        result["sensitivity"] = float(tp / (tp + fn)) if tp + fn else None
        result["specificity"] = float(tn / (tn + fp)) if tn + fp else None
    if bootstrap and len(y_true) > 1:
        result["ci95"] = bootstrap_intervals(y_true, probs, y_pred, n_classes, positive, n_boot=bootstrap, seed=seed,
                                             groups=groups)
    if groups is not None:
        result["n_groups"] = len(set(map(str, groups)))
    return result
