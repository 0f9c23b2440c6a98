"""The chest recipe's split of ``chest_xray_pneumonia/train`` and a seeded training subset of it.

Shared by the benches that fit heads on cached features (``erase_choice.py``, ``fused_affine_check.py``;
run as scripts, so this folder is on ``sys.path``): the committed config's seed and group pattern, the
audit's near-duplicate groups kept on one side, ``n_train`` training images drawn without replacement.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHEST_TRAIN = REPO.parent / "shared" / "data" / "chest_xray_pneumonia" / "train"


def chest_split_subset(n_train: int, seed: int):
    """``(train, val, y_train, y_val)``: ``n_train`` items of the recipe's training split (seeded, in split
    order) and its whole validation split, with their labels."""
    from medclf_core.data.audit import audit_dataset
    from medclf_core.data.scan import scan_dataset
    from medclf_core.data.split import split_dataset

    cfg = json.loads((REPO / "configs" / "chest-xray-pneumonia.json").read_text())
    index = scan_dataset(CHEST_TRAIN)
    splits = split_dataset(index, audit_dataset(index, near_duplicate_distance=8), val_fraction=0.15,
                           test_fraction=0.15, seed=cfg["seed"], group_pattern=cfg["group_pattern"])
    rng = np.random.default_rng(seed)
    train = [splits["train"][i] for i in sorted(rng.choice(len(splits["train"]), n_train, replace=False))]
    val = splits["val"]
    return train, val, np.array([it.label for it in train]), np.array([it.label for it in val])
