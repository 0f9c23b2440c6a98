"""medclf_core.inference.overlap: an evaluation on the model's own training images says so (issue 24)."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import make_pattern_dataset
from medclf_core.data.audit import audit_dataset, pixel_fingerprint
from medclf_core.data.scan import scan_dataset
from medclf_core.inference.overlap import training_image_hashes, training_overlap
from medclf_core.registry.store import TRAINING_IMAGES_FILE


@pytest.fixture
def trained_on(tmp_path):
    """A tiny dataset, its audit and a split of it (train: 4 images, val: 2, test: 2) as training would record."""
    root = make_pattern_dataset(tmp_path / "data", n_per_class=4, size=24)
    report = audit_dataset(scan_dataset(root), near_duplicate_distance=-1)
    items = sorted(scan_dataset(root).items, key=lambda it: it.rel)
    splits = {"train": items[:2] + items[4:6], "val": [items[2], items[6]], "test": [items[3], items[7]]}
    return root, report, splits


def _hashes_of(folder):
    return audit_dataset(scan_dataset(folder), near_duplicate_distance=-1).hashes


def test_the_fingerprint_rule_is_the_audits(trained_on):
    _, report, _ = trained_on
    assert pixel_fingerprint(report.hashes) == report.fingerprint


def test_by_image_hashes_train_and_val_images_overlap_test_images_do_not(trained_on, tmp_path):
    root, report, splits = trained_on
    run = tmp_path / "run"
    run.mkdir()
    (run / TRAINING_IMAGES_FILE).write_text(json.dumps(training_image_hashes(splits, report.hashes)))
    card = {"run_dir": str(run), "dataset": {"fingerprint": "something else"}}
    # another folder: one training image, one validation image, one held-out test image (renamed) and 2 new ones
    other = make_pattern_dataset(tmp_path / "other", n_per_class=1, size=24, seed=7)
    for it, name in ((splits["train"][0], "t.png"), (splits["val"][0], "v.png"), (splits["test"][0], "h.png")):
        shutil.copy(it.path, other / "circle" / name)
    o = training_overlap(card, _hashes_of(other))
    assert (o["basis"], o["n"], o["n_overlapping"], o["n_train"], o["n_val"], o["n_test"]) == \
        ("image hashes", 5, 2, 1, 1, 1)
    assert o["message"].startswith("2 of the 5 evaluated images are identical") and "overstate" in o["message"]
    clean = training_overlap(card, _hashes_of(make_pattern_dataset(tmp_path / "new", n_per_class=2, size=24, seed=9)))
    assert clean["n_overlapping"] == 0 and clean["message"] is None


def test_by_the_cards_fingerprint_for_a_run_without_image_hashes(trained_on, tmp_path):
    root, report, _ = trained_on
    card = {"run_dir": str(tmp_path), "dataset": {"fingerprint": report.fingerprint, "counts": {
        "train": {"circle": 2, "square": 2}, "val": {"circle": 1, "square": 1}, "test": {"circle": 1, "square": 1}}}}
    same = training_overlap(card, _hashes_of(root))
    assert same["basis"] == "dataset fingerprint" and same["n_overlapping"] == 6 and same["n"] == 8
    assert "trained on" in same["message"] and "overstate" in same["message"]
    other = make_pattern_dataset(tmp_path / "other", n_per_class=2, size=24, seed=3)
    assert training_overlap(card, _hashes_of(other)) == {"n_overlapping": 0, "n": 4, "basis": "dataset fingerprint",
                                                        "message": None}
    assert training_overlap({}, _hashes_of(other))["basis"] is None  # nothing recorded: not checked, no claim


def test_an_older_run_gets_its_training_images_recorded_from_its_dataset(trained_run, chest_sample, tmp_path,
                                                                            pattern_dataset):
    """record_training_images: the test split from evaluation.json, every other image as train+val; the same
    sets training wrote, and refused for another dataset."""
    from helpers import as_older_run
    from medclf_core.errors import DatasetError
    from medclf_core.inference.overlap import record_training_images
    from medclf_core.registry.store import read_card

    older = as_older_run(trained_run, tmp_path / "older")
    (older / TRAINING_IMAGES_FILE).unlink(missing_ok=True)
    written = json.loads((trained_run / TRAINING_IMAGES_FILE).read_text())["splits"]
    with pytest.raises(DatasetError, match="not the dataset"):
        record_training_images(older, pattern_dataset)
    assert not (older / TRAINING_IMAGES_FILE).exists()
    recorded = json.loads(record_training_images(older, chest_sample).read_text())["splits"]
    assert set(recorded["test"]) == set(written["test"])
    assert set(recorded["train+val"]) == set(written["train"]) | set(written["val"])
    o = training_overlap({**read_card(older), "run_dir": str(older)}, _hashes_of(chest_sample))
    assert o["n_overlapping"] == len(recorded["train+val"]) and "training or validation split" in o["message"]
