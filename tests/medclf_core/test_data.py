"""medclf_core.data: scanning layouts and zips, the audit, leak-free splits."""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medclf_core.data import (audit_dataset, safe_extract_zip, scan_dataset, split_counts, split_dataset,
                              stratified_group_split)
from medclf_core.errors import DatasetError


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
    assert index.presplit and index.counts()["train"] == {"NORMAL": 6, "PNEUMONIA": 6}
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


def test_zip_slip_and_links_are_skipped(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.txt", "fine")
        zf.writestr("../escape.txt", "bad")
        zf.writestr("/abs.txt", "bad")
        link = zipfile.ZipInfo("ok/link")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    dest = tmp_path / "out"
    dest.mkdir()
    skipped = safe_extract_zip(archive, dest)
    assert {s["file"] for s in skipped} == {"../escape.txt", "/abs.txt", "ok/link"}
    assert (dest / "ok" / "a.txt").is_file()
    assert not (tmp_path / "escape.txt").exists() and not (dest / "ok" / "link").exists()


def test_zip_bomb_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/zeros.bin", b"\0" * (60 * 2**20))
    with pytest.raises(DatasetError, match="zip bomb"):
        safe_extract_zip(archive, tmp_path / "out")


def _planted(tmp_path, chest_sample):
    """Chest sample plus an exact copy, a re-encoded copy, a cross-class copy, and two broken files."""
    root = tmp_path / "planted"
    shutil.copytree(chest_sample, root)
    normals = sorted((root / "NORMAL").iterdir())
    shutil.copy(normals[0], root / "NORMAL" / "copy of first.jpeg")
    Image.open(normals[1]).resize((300, 300)).save(root / "NORMAL" / "rescaled.png")
    shutil.copy(normals[2], root / "PNEUMONIA" / "mislabelled.jpeg")
    (root / "PNEUMONIA" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "NORMAL" / "empty.png").write_bytes(b"")
    return root, normals


def test_audit_finds_planted_problems(tmp_path, chest_sample):
    root, normals = _planted(tmp_path, chest_sample)
    report = audit_dataset(scan_dataset(root))
    assert {u["file"] for u in report.unreadable} == {"PNEUMONIA/broken.jpg", "NORMAL/empty.png"}
    groups = [set(g) for g in report.duplicate_groups]
    assert {f"NORMAL/{normals[0].name}", "NORMAL/copy of first.jpeg"} in groups
    assert {f"NORMAL/{normals[2].name}", "PNEUMONIA/mislabelled.jpeg"} in groups
    assert any(f"NORMAL/{normals[2].name}" in g for g in report.conflicting_labels)
    assert any({f"NORMAL/{normals[1].name}", "NORMAL/rescaled.png"} <= set(g) for g in report.near_duplicate_groups)
    assert report.counts["all"] == {"NORMAL": 42, "PNEUMONIA": 41}
    assert any("could not be read" in w for w in report.warnings())
    assert len(report.fingerprint) == 64


def test_audit_flags_duplicates_across_given_splits(tmp_path, chest_sample):
    src = sorted((chest_sample / "NORMAL").iterdir())
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            (tmp_path / split / cls).mkdir(parents=True)
    for f in src[:4]:
        shutil.copy(f, tmp_path / "train" / "NORMAL" / f.name)
    shutil.copy(src[0], tmp_path / "test" / "NORMAL" / "leak.jpeg")
    for f in sorted((chest_sample / "PNEUMONIA").iterdir())[:4]:
        shutil.copy(f, tmp_path / "train" / "PNEUMONIA" / f.name)
    report = audit_dataset(scan_dataset(tmp_path))
    assert any("test/NORMAL/leak.jpeg" in g for g in report.cross_split_duplicates)


def test_fingerprint_is_stable_and_content_sensitive(tmp_path, chest_sample):
    a = audit_dataset(scan_dataset(chest_sample)).fingerprint
    assert a == audit_dataset(scan_dataset(chest_sample)).fingerprint
    root = tmp_path / "c"
    shutil.copytree(chest_sample, root)
    victim = sorted((root / "NORMAL").iterdir())[0]
    Image.fromarray(255 - np.asarray(Image.open(victim))).save(victim, format="JPEG")
    assert audit_dataset(scan_dataset(root)).fingerprint != a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_keeps_duplicate_groups_together_and_is_stratified(tmp_path, chest_sample, seed):
    root, _ = _planted(tmp_path, chest_sample)
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
    from medclf_core.data import group_key

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
