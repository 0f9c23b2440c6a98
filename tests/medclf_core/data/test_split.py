"""medclf_core.data.split: leak-free splits (duplicate and patient groups whole), stratified and seeded."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medclf_core.data.audit import audit_dataset
from medclf_core.data.scan import scan_dataset, split_counts
from medclf_core.data.split import group_key, split_dataset, stratified_group_split
from medclf_core.errors import DatasetError


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_keeps_duplicate_groups_together_and_is_stratified(planted, seed):
    root, _ = planted
    index = scan_dataset(root)
    report = audit_dataset(index)
    splits = split_dataset(index, report, val_fraction=0.2, test_fraction=0.2, seed=seed)
    where = {it.rel: s for s, items in splits.items() for it in items}
    for group in report.duplicate_groups + report.near_duplicate_groups:
        assert len({where[r] for r in group}) == 1, group
    assert "PNEUMONIA/broken.jpg" not in where
    counts = split_counts(splits, index.class_names)
    for cls in index.class_names:
        total = sum(counts[s][cls] for s in counts)
        assert abs(counts["val"][cls] - 0.2 * total) <= 3 and abs(counts["test"][cls] - 0.2 * total) <= 3
    again = split_dataset(index, report, val_fraction=0.2, test_fraction=0.2, seed=seed)
    assert {s: [i.rel for i in v] for s, v in again.items()} == {s: [i.rel for i in v] for s, v in splits.items()}


def test_stratified_group_split_never_breaks_a_group():
    labels = [0] * 10 + [1] * 10
    groups = [[0, 1, 2], [3, 4], [5], [6], [7], [8], [9], [10, 11, 12, 13], [14], [15], [16], [17], [18], [19]]
    out = stratified_group_split(labels, groups, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    assigned = {k: s for s, ks in out.items() for k in ks}
    assert sorted(assigned) == list(range(20))
    for g in groups:
        assert len({assigned[k] for k in g}) == 1


def test_group_pattern_keeps_a_patients_images_together(tmp_path):
    assert group_key("PNEUMONIA/person12_virus_40.jpeg", r"(person\d+|NORMAL2-IM-\d+|IM-\d+)") == "person12"
    assert group_key("XRAY/normal_NORMAL2-IM-0589-0001.jpeg", r"(person\d+|NORMAL2-IM-\d+|IM-\d+)") == "NORMAL2-IM-0589"
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / cls).mkdir()
    for patient in range(12):
        cls = "NORMAL" if patient % 2 else "PNEUMONIA"
        for view in range(3):
            img = rng.integers(0, 255, (24, 24), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / cls / f"person{patient}_img{view}.png")
    index = scan_dataset(tmp_path)
    report = audit_dataset(index, near_duplicate_distance=-1)
    for seed in range(4):
        splits = split_dataset(index, report, val_fraction=0.25, test_fraction=0.25, seed=seed,
                               group_pattern=r"person\d+")
        side = {}
        for s, items in splits.items():
            for it in items:
                pid = it.rel.split("/")[1].split("_")[0]
                assert side.setdefault(pid, s) == s, f"{pid} is in two splits"


def test_a_test_only_folder_is_an_evaluation_set_but_not_a_training_set(tmp_path):
    """Issue 16: ``DATA/test/<class>/...`` is accepted for evaluation; training still asks for 'train'."""
    from helpers import make_pattern_dataset

    make_pattern_dataset(tmp_path / "d" / "test", n_per_class=3)
    index = scan_dataset(tmp_path / "d")
    assert index.presplit and {it.split for it in index.items} == {"test"} and len(index.items) == 6
    with pytest.raises(DatasetError, match="no 'train' folder"):
        split_dataset(index, audit_dataset(index))



def test_a_pattern_that_gives_an_empty_id_matches_no_patient():
    """Walk-through, session 21: `\\d*` matched every name with the id "" and the page said nothing."""
    from medclf_core.data.split import unmatched_note

    assert "matched none of the 2" in unmatched_note(["a/x.png", "b/y.png"], r"\d*")
