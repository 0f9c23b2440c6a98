"""medclf_core.data.scan: dataset layouts (class folders, train/val/test, zips), and what is refused."""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter

import pytest
from bad_inputs import encode, gradient
from PIL import Image

import medclf_core.data.scan as scan_module
from medclf_core.data.audit import audit_dataset
from medclf_core.data.scan import scan_dataset, split_counts
from medclf_core.data.split import split_dataset
from medclf_core.errors import DatasetError

PNG = encode(Image.fromarray(gradient()), "PNG")


def test_scan_class_folders(chest_sample):
    index = scan_dataset(chest_sample)
    assert index.class_names == ["NORMAL", "PNEUMONIA"]
    assert not index.presplit
    assert Counter(it.label for it in index.items) == {0: 40, 1: 40}


def test_scan_presplit(tmp_path, chest_sample):
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for f in sorted((chest_sample / cls).iterdir())[:6 if split == "train" else 2]:
                shutil.copy(f, d / f.name)
    index = scan_dataset(tmp_path)
    train = [it for it in index.items if it.split == "train"]
    assert index.presplit and split_counts({"train": train}, index.class_names)["train"] == {"NORMAL": 6, "PNEUMONIA": 6}
    report = audit_dataset(index)
    splits = split_dataset(index, report, val_fraction=0.25, seed=1)
    assert len(splits["test"]) == 4  # kept as given
    assert len(splits["val"]) > 0 and len(splits["train"]) + len(splits["val"]) == 12  # val carved from train


def test_scan_zip_with_wrapping_folder(tmp_path, chest_sample):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for cls in ("NORMAL", "PNEUMONIA"):
            for f in sorted((chest_sample / cls).iterdir())[:3]:
                zf.write(f, f"mydata/{cls}/{f.name}")
    index = scan_dataset(archive, extract_to=tmp_path / "x")
    assert index.class_names == ["NORMAL", "PNEUMONIA"] and len(index.items) == 6


@pytest.mark.parametrize("layout", ["one_class", "empty", "missing"])
def test_scan_rejects_unusable_folders(tmp_path, layout):
    if layout == "one_class":
        (tmp_path / "only").mkdir()
        Image.new("L", (8, 8)).save(tmp_path / "only" / "a.png")
    target = tmp_path / "nope" if layout == "missing" else tmp_path
    with pytest.raises(DatasetError):
        scan_dataset(target)


def test_scan_refuses_too_many_files(tmp_path, monkeypatch, tiny_png):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.png").write_bytes(tiny_png)
    monkeypatch.setattr(scan_module, "DATASET_MAX_FILES", 5)
    with pytest.raises(DatasetError, match="6 image files; the limit is 5"):
        scan_dataset(tmp_path)


def test_scan_reports_skipped_members(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for cls in ("A", "B"):
            for i in range(2):
                zf.writestr(f"{cls}/{i}.png", PNG)
        zf.writestr("../../escape.png", PNG)
    index = scan_dataset(archive, extract_to=tmp_path / "x")
    assert index.class_names == ["A", "B"]
    assert any(s.get("file") == "../../escape.png" for s in getattr(index, "skipped", []))


def test_an_image_file_given_as_a_dataset_says_what_a_dataset_is(tmp_path):
    f = tmp_path / "x.png"
    f.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="single file.*one subfolder per class"):
        scan_dataset(f)


@pytest.mark.parametrize("wrapper", ["", "hospital-b/"])
def test_a_test_only_zip_keeps_its_test_split(tmp_path, wrapper):
    """Issue 16: a zip of test/<class>/... (in a top folder or not) stays a pre-split evaluation set."""
    from helpers import make_pattern_dataset

    make_pattern_dataset(tmp_path / "src", n_per_class=2)
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "src").rglob("*.png")):
            zf.write(f, f"{wrapper}test/{f.relative_to(tmp_path / 'src').as_posix()}")
    index = scan_dataset(archive, extract_to=tmp_path / "x")
    assert index.presplit and {it.split for it in index.items} == {"test"} and len(index.items) == 4
    assert index.class_names == ["circle", "square"]


def test_a_damaged_zip_says_it_cannot_be_opened_not_that_it_is_a_single_file(tmp_path):
    f = tmp_path / "hospital.zip"
    f.write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(DatasetError, match="cannot be opened as a zip file"):
        scan_dataset(f)

