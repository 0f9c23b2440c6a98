"""How a run will be trained on a dataset of a given size, said before it is trained (the Train page's audit).

The rule is the trainer's own, in one place: :func:`resolve_recipe` (``auto``: the transfer recipe for a
pretrained backbone) and :func:`~medclf_core.training.crossfit.use_cross_fit` (fewer than ``small_data_images``
labelled images, a linear head, no fine-tuning: the head is fitted on every image, its regularisation chosen by
cross-validation). :mod:`~medclf_core.training.fitting` calls both when it trains; :func:`dataset_plan` calls them
on the settings a run would have, before any image is decoded.

Example::

    >>> audit = {"n_images": 80, "presplit": False, "counts": {"all": {"NORMAL": 40, "PNEUMONIA": 40}},
    ...          "duplicate_groups": [], "near_duplicate_groups": []}
    >>> print(dataset_plan(audit, ["efficientnet_lite0", "simple_cnn"]))  # doctest: +NORMALIZE_WHITESPACE
    80 images, fewer than 400: with efficientnet_lite0 and no fine-tuning epochs, the head is fitted on all
    80 images, its regularisation chosen by 5-fold cross-validation, and the figures are out-of-fold
    predictions; the Epochs, Learning rate and Early-stopping patience settings do not apply. With another
    architecture or fine-tuning epochs: medclf splits them 70/15/15, stratified.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import replace

from medclf_core.errors import MedclfError
from medclf_core.models.architectures import get_architecture
from medclf_core.training.config import TrainConfig
from medclf_core.training.crossfit import fold_count, use_cross_fit

NO_WEIGHTS = (None, "", "none", "None")


def resolve_recipe(recipe: str, pretrained: bool, init_from: str | None = None) -> str:
    """``transfer`` (head on cached features) or ``scratch`` (fit on images), resolving ``auto``."""
    if recipe == "transfer" and not pretrained:
        raise MedclfError("The transfer recipe needs a pretrained backbone (an architecture with ImageNet weights, "
                          "weights not 'none').")
    if recipe == "auto":
        return "transfer" if pretrained and not init_from else "scratch"
    return recipe


def head_dense_units(arch: str, model_options: Mapping | None = None) -> int:
    """The hidden units of the classifier head an architecture is built with (0: a linear head): the option
    training passes (``model_options`` over the architecture's defaults), else the factory's own default."""
    spec = get_architecture(arch)
    options = {**spec.defaults, **(model_options or {})}
    if "dense_units" in options:
        return int(options["dense_units"] or 0)
    param = inspect.signature(spec.build).parameters.get("dense_units")
    return int(param.default or 0) if param is not None and param.default is not inspect.Parameter.empty else 0


def takes_cross_fit(cfg: TrainConfig, n_images: int) -> bool:
    """Whether a run with ``cfg`` on ``n_images`` labelled images fits its head by cross-validation
    (assuming its pretrained weights load, as they do offline for the EfficientNet-Lite family)."""
    cfg = cfg.resolved()
    pretrained = get_architecture(cfg.arch).is_pretrained and cfg.weights not in NO_WEIGHTS
    try:
        recipe = resolve_recipe(cfg.recipe, pretrained, cfg.init_from)
    except MedclfError:
        return False
    return recipe == "transfer" and use_cross_fit(n_images, head_dense_units(cfg.arch, cfg.model_options),
                                                  cfg.fine_tune_epochs if pretrained else 0, cfg.small_data_images)


def _held_out_text(presplit: bool, cfg: TrainConfig) -> str:
    if presplit:
        return "the dataset's own train, val and test folders are used"
    parts = [1 - cfg.val_split - cfg.test_split, cfg.val_split, cfg.test_split]
    return "medclf splits them " + "/".join(f"{round(100 * p)}" for p in parts) + ", stratified"


def dataset_plan(audit: Mapping, architectures: Sequence[str], cfg: TrainConfig | None = None) -> str:
    """How a dataset (an :func:`~medclf_core.data.audit.audit_source` dict) will be trained, in words: which of
    ``architectures`` fit their head on every image by cross-validation (with ``cfg``'s other settings, and no
    fine-tuning epochs: the Train page's default), which settings that leaves unused, and how the others split."""
    cfg = cfg or TrainConfig(data="", fine_tune_epochs=0)
    n = int(audit["n_images"])
    held_out = _held_out_text(bool(audit["presplit"]), cfg)
    cross_fitted = [a for a in architectures
                    if takes_cross_fit(replace(cfg, arch=a), n)]
    if not cross_fitted:
        return f"{n} images: {held_out}."
    per_class: dict[str, int] = {}
    for counts in audit["counts"].values():
        for name, k in counts.items():
            per_class[name] = per_class.get(name, 0) + int(k)
    merged = sum(len(g) - 1 for g in [*audit.get("duplicate_groups", []), *audit.get("near_duplicate_groups", [])])
    folds = fold_count(min(per_class.values(), default=0), n - merged)
    how = (f"its regularisation chosen by {folds}-fold cross-validation, and the figures are out-of-fold predictions"
           if folds >= 2 else "but there are too few images of a class to cross-validate (training will refuse)")
    text = (f"{n} images, fewer than {cfg.small_data_images}: with {', '.join(cross_fitted)} and no fine-tuning "
            f"epochs, the head is fitted on all {n} images, {how}; the Epochs, Learning rate and Early-stopping "
            "patience settings do not apply.")
    if len(cross_fitted) < len(architectures):
        text += f" With another architecture or fine-tuning epochs: {held_out}."
    else:
        text += f" With fine-tuning epochs: {held_out}."
    return text
