"""medclf_core.data.fingerprint: a dataset's content fingerprint, and the one rule for split "auto"."""

from __future__ import annotations

import zipfile

from medclf_core.data.fingerprint import dataset_fingerprint, evaluated_split
from medclf_core.data.scan import scan_dataset

def _dataset(root):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / f"{split}-{cls}.png").write_bytes(f"pixels of {split} {cls}".encode())
    return root


def test_dataset_fingerprint_follows_content_and_split(tmp_path):
    data = _dataset(tmp_path / "data")
    fp = dataset_fingerprint(data)
    assert len(fp) == 64 and fp == dataset_fingerprint(data) == dataset_fingerprint(str(data))
    test_fp = dataset_fingerprint(data, split="auto")
    assert test_fp == dataset_fingerprint(data, split="test") != fp
    (data / "train" / "a" / "train-a.png").write_bytes(b"changed")
    assert dataset_fingerprint(data) != fp
    assert dataset_fingerprint(data, split="test") == test_fp  # the test split did not change
    zipped = tmp_path / "data.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in sorted(data.rglob("*")):
            zf.write(f, f"data/{f.relative_to(data)}")
    assert dataset_fingerprint(zipped) == dataset_fingerprint(data)


def test_dataset_fingerprint_of_an_audit_is_the_training_fingerprint(tmp_path):
    class Report:  # what audit_dataset returns carries the fingerprint training records in the card
        fingerprint = "c5dfcea607938d836090d147a3aef2b0b6b51c065914373c113978bbb8675757"

    assert dataset_fingerprint(Report()) == Report.fingerprint
    data = _dataset(tmp_path / "data")
    assert dataset_fingerprint(scan_dataset(data)) == dataset_fingerprint(data)


def test_auto_means_the_test_folder_of_a_presplit_dataset_else_all(tmp_path):
    presplit = scan_dataset(_dataset(tmp_path / "presplit"))
    assert evaluated_split(presplit, "auto") == "test"
    flat = tmp_path / "flat"
    for cls in ("a", "b"):
        (flat / cls).mkdir(parents=True)
        (flat / cls / "x.png").write_bytes(cls.encode())
    assert evaluated_split(scan_dataset(flat), "auto") == "all"
    no_test = tmp_path / "no-test"
    for cls in ("a", "b"):
        (no_test / "train" / cls).mkdir(parents=True)
        (no_test / "train" / cls / "x.png").write_bytes(cls.encode())
    assert evaluated_split(scan_dataset(no_test), "auto") == "all"
    assert [evaluated_split(presplit, s) for s in ("all", "train", "val", "test")] == ["all", "train", "val", "test"]
