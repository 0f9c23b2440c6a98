"""The small-data transfer head: every labelled image in the final fit, its regularisation chosen by cross-validation.

Below :data:`SMALL_DATA_IMAGES` labelled images, a held-out validation split is a few
dozen images: early stopping, the temperature and the threshold chosen on it move with
one or two images (12 validation images of the bundled chest sample gave T = 0.05 and a
threshold of 0.9999997, so every probability read 0% or 100%). Here instead:

- the head is an L2-regularised (multinomial) logistic regression on the cached,
  standardised backbone features, its strength ``C`` chosen by stratified, group-aware
  K-fold cross-validation (duplicate and patient groups never straddle folds: the same
  groups :func:`medclf_core.data.split.duplicate_components` keeps whole in a split);
  every cached view of a training image is a training row, only the image itself is scored;
- the final head is fitted on every labelled image with that ``C`` and written into the
  model's own ``predictions`` layer (the standardisation folded into its kernel and bias);
- the out-of-fold probabilities are what the card reports (with 95% intervals and n), and
  what a temperature or a threshold may be fitted on (:mod:`medclf_core.training.evaluate`).

The cost is that of the backbone pass, done once; 11 values of ``C`` x 5 folds of a linear
fit on a few hundred cached rows take seconds.

Example::

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1, 60, 5)); y = (x[0, :, 0] > 0).astype(int)
    >>> cf = cross_fit(x, y, [[k] for k in range(60)], num_classes=2, seed=0)
    >>> cf.folds, cf.oof.shape, bool((cf.oof.argmax(1) == y).mean() > 0.8)
    (5, (60, 2), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medclf_core.trust.calibration import softmax

# Below this many labelled images the head is fitted on all of them and judged by cross-validation. Why 400: with
# the default 15% validation split that is 60 images, about 30 per class for two classes (fewer for more classes);
# under that, one image moves validation accuracy by 2 points or more and early stopping, the temperature and the
# threshold follow single images. Above it a held-out split is large enough and cross-validating brings little.
SMALL_DATA_IMAGES = 400
MAX_FOLDS = 5
C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 11))  # inverse L2 strength on standardised features


@dataclass
class CrossFit:
    """What cross-validating the head found, and the final head's weights for the ``predictions`` layer."""

    C: float
    folds: int
    oof: np.ndarray                      # (N, K) out-of-fold probabilities of each image (its own view)
    kernel: np.ndarray                   # (D, K) of the final head, on raw features
    bias: np.ndarray                     # (K,)
    cv_log_loss: dict = field(default_factory=dict)   # C -> out-of-fold log-loss

    def summary(self) -> dict:
        return {"method": "L2 logistic regression on standardised cached features, every labelled image in the "
                          "final fit", "C": self.C, "C_chosen_by": f"{self.folds}-fold stratified group "
                          "cross-validation (out-of-fold log-loss)", "folds": self.folds,
                "cv_log_loss": {f"{c:.3g}": round(v, 4) for c, v in self.cv_log_loss.items()}}


def use_cross_fit(n_images: int, dense_units: int, fine_tune_epochs: int = 0,
                  below: int = SMALL_DATA_IMAGES) -> bool:
    """Whether a transfer run takes the small-data head: fewer than ``below`` images, a linear head (no hidden
    layer), and no fine-tuning (whose early stopping needs held-out images)."""
    return n_images < below and not dense_units and not fine_tune_epochs


def fold_count(smallest_class: int, n_groups: int, max_folds: int = MAX_FOLDS) -> int:
    """How many folds cross-validation takes: at most ``max_folds``, no more than the images of the smallest
    class or the groups kept whole (fewer than 2: it cannot cross-validate).

    >>> fold_count(40, 80), fold_count(3, 80), fold_count(40, 1)
    (5, 3, 1)
    """
    return int(min(max_folds, smallest_class, n_groups))


def group_folds(labels, groups: list[list[int]], seed: int, max_folds: int = MAX_FOLDS) -> np.ndarray:
    """A fold number per image: stratified by class, each group whole (:func:`stratified_group_split`)."""
    from medclf_core.data.split import stratified_group_split

    labels = np.asarray(labels, dtype=int)
    k = fold_count(int(np.bincount(labels).min()), len(groups), max_folds)
    if k < 2:
        raise ValueError("Cross-validation needs at least two images (and groups) of every class.")
    parts = stratified_group_split(labels.tolist(), groups, {f"f{i}": 1.0 / k for i in range(k)}, seed)
    fold = np.full(len(labels), -1, dtype=int)
    for i in range(k):
        fold[parts[f"f{i}"]] = i
    return fold


def _fit(x: np.ndarray, y: np.ndarray, C: float, num_classes: int, class_weight: dict | None):
    """A logistic regression on standardised ``x``; returns ``(kernel, bias)`` on raw features (softmax logits)."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    lr = LogisticRegression(C=C, max_iter=2000, class_weight=class_weight)
    lr.fit((x - mu) / sd, y)
    coef, icpt = lr.coef_, lr.intercept_
    w = np.zeros((x.shape[1], num_classes))
    b = np.zeros(num_classes)
    if num_classes == 2 and coef.shape[0] == 1:  # sigmoid(z) = softmax([0, z])[1]
        w[:, 1], b[1] = coef[0], icpt[0]
    else:
        w[:, lr.classes_], b[lr.classes_] = coef.T, icpt
    w = w / sd[:, None]
    return w, b - mu @ w


def cross_fit(views: np.ndarray, labels, groups: list[list[int]], *, num_classes: int,
              class_weight: dict | None = None, seed: int = 1337, grid=C_GRID,
              score_views: tuple[int, ...] = (0,)) -> CrossFit:
    """Choose ``C`` by cross-validation on cached features ``views`` (V, N, D), then fit on every image.

    ``views[0]`` is each image itself; the other views (augmentations) are extra training rows of
    the same image, always in its fold. Out-of-fold probabilities average the ``score_views``
    (the image, plus any test-time view the model uses). ``C`` minimises the out-of-fold log-loss.
    """
    views = np.asarray(views, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    fold = group_folds(y, groups, seed)
    n_views = views.shape[0]
    losses, oofs = {}, {}
    for C in grid:
        oof = np.zeros((len(y), num_classes))
        for f in range(fold.max() + 1):
            tr, te = fold != f, fold == f
            w, b = _fit(views[:, tr].reshape(-1, views.shape[2]), np.tile(y[tr], n_views), C, num_classes,
                        class_weight)
            oof[te] = np.mean([softmax(views[v, te] @ w + b) for v in score_views], axis=0)
        losses[C] = float(-np.mean(np.log(np.clip(oof[np.arange(len(y)), y], 1e-12, 1.0))))
        oofs[C] = oof
    best = min(grid, key=lambda c: (round(losses[c], 6), c))  # ties: the stronger regularisation
    w, b = _fit(views.reshape(-1, views.shape[2]), np.tile(y, n_views), best, num_classes, class_weight)
    return CrossFit(best, int(fold.max() + 1), oofs[best], w.astype(np.float32), b.astype(np.float32), losses)


# A temperature or a threshold is fitted only on at least this many out-of-fold predictions of every class: one
# parameter each, but on fewer the fitted value follows two or three images (the validation NLL of 12 images that all
# sat on the right side gave T = 0.05). Below it: T = 1. The binary threshold of a
# small-data run is always the rule 0.5 (see calibrate_out_of_fold), stated on the card.
MIN_CALIBRATION_PER_CLASS = 20


@dataclass
class SmallDataCalibration:
    """The temperature and the threshold of a small-data run, and the card's words for how they were chosen."""

    temperature: float
    threshold: float | None
    calibration_method: str
    calibration_fitted_on: str
    threshold_rule: str | None
    threshold_on: str | None


def calibrate_out_of_fold(y, oof, positive: int | None, *, folds: int) -> SmallDataCalibration:
    """Temperature (never below 1) from out-of-fold predictions, or T = 1 when too few; the threshold by rule.

    The temperature is bounded at T >= 1: fitted on out-of-fold predictions of a near-separable
    small set it may still ask to sharpen, and those few images cannot support certainty.
    """
    from medclf_core.trust.calibration import fit_temperature

    y = np.asarray(y, dtype=int)
    per_class = int(np.bincount(y, minlength=oof.shape[1]).min())
    enough = per_class >= MIN_CALIBRATION_PER_CLASS
    on = f"out-of-fold predictions of {folds}-fold cross-validation ({len(y)} images)"
    if enough:
        t = fit_temperature(y, oof, lower=1.0)
        cal = ("temperature scaling (out-of-fold NLL, T >= 1: never sharpened)", on)
    else:
        t = 1.0
        cal = ("none: T = 1 (the model's own probabilities)",
               f"rule: fewer than {MIN_CALIBRATION_PER_CLASS} images in a class ({per_class}), too few to fit a "
               "temperature")
    if oof.shape[1] != 2 or positive is None:
        return SmallDataCalibration(t, None, *cal, None, None)
    # The threshold is a rule, not fitted: on a few dozen out-of-fold predictions of a nearly separable set the
    # bootstrap-Youden threshold falls anywhere in the gap between the classes (0.43 to 0.75 over seeds of the
    # bundled sample, and at 0.75 two demo pneumonia films read NORMAL), while 0.5 is the decision of the
    # class-balanced fit itself.
    rule = ("rule: 0.5, the most probable class of the class-balanced head (a threshold chosen on a few dozen "
            "out-of-fold predictions follows single images)")
    return SmallDataCalibration(t, 0.5, *cal, rule, "rule, not fitted" if not enough else
                                f"rule, not fitted ({len(y)} images, cross-validated)")
