"""Rows of the Models page's facts table that depend on how the run was trained, in plain words.

A cross-validated (small-data) run fits its head on every image and chooses its regularisation by
cross-validation: its train/val/test split only fits the out-of-distribution check, and the batch size and
learning rate settings were never used. The card must not list them as if they had shaped the model.

>>> card = {"metrics": {"split": "cross-validation (out-of-fold)", "n": 40},
...         "dataset": {"counts": {"train": {"CT": 14}, "val": {"CT": 3}}}, "config": {"batch_size": 32}}
>>> batch_and_learning_rate_text(card)[:40]
'not used: the head was chosen by cross-v'
"""

from __future__ import annotations

from collections.abc import Mapping

from medclf_core.registry.card_reading import is_cross_validated


#: What a cross-validated run's train/val/test split is still for (the Models page's row, the Train page's caption).
CV_SPLIT_PURPOSE = ("only fits the out-of-distribution check (the training split's features, its threshold on the "
                    "validation split)")


def split_counts_text(card: Mapping) -> str:
    """The "Images per split" row: the counts, and for a cross-validated run what the split was for.

    >>> split_counts_text({"metrics": {}, "dataset": {"counts": {"train": {"A": 5, "B": 4}, "test": {"A": 1}}}})
    'train: A 5, B 4; test: A 1'
    """
    counts = "; ".join(f"{split}: " + ", ".join(f"{c} {n}" for c, n in per.items())
                       for split, per in ((card.get("dataset") or {}).get("counts") or {}).items())
    if not is_cross_validated(card):
        return counts
    n = (card.get("metrics") or {}).get("n")
    return (f"{counts}. This split {CV_SPLIT_PURPOSE}; the classifier and its figures use all {n} images by "
            "cross-validation (out-of-fold predictions), so no image is held out for a test.")


def batch_and_learning_rate_text(card: Mapping) -> str:
    """The "Batch size / learning rate" row; a cross-validated head used neither setting."""
    if is_cross_validated(card):
        return ("not used: the head was chosen by cross-validation (a regularised fit on all the images, "
                "no epochs, batches or learning rate)")
    cfg = card.get("config") or {}
    return f"{cfg.get('batch_size')} / {cfg.get('learning_rate')}"


def ood_check_text(card: Mapping) -> str:
    """The "Out-of-distribution check" row: what it was fitted on (the Models page warns above the facts when that
    is few images, :func:`~medclf_core.trust.gate_size.small_gate_notice`; the row does not say it twice).

    >>> ood_check_text({"ood": {"n_train": 1527, "n_val": 329}})
    'fitted on 1527 training and 329 validation images'
    >>> ood_check_text({})
    'none recorded'
    """
    ood = card.get("ood")
    if not isinstance(ood, Mapping) or ood.get("n_val") is None:
        return "none recorded"
    return f"fitted on {ood.get('n_train')} training and {ood.get('n_val')} validation images"
