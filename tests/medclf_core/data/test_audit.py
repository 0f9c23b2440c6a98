"""medclf_core.data.audit: unreadable and damaged files, exact and near duplicates, fingerprints, bounded cost."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

import medclf_core.data.audit as audit_module
from medclf_core.data.audit import audit_dataset, audit_source
from medclf_core.data.scan import open_dataset, scan_dataset
from medclf_core.errors import DatasetError


def test_audit_finds_planted_problems(planted):
    root, normals = planted
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


def test_audit_of_10000_identical_images_in_a_zip_is_bounded(tmp_path, monkeypatch, tiny_png):
    """Issue 17: 10,000 identical tiny PNGs took 64 s and 6.9 GB. Exact duplicates are grouped by hash
    first, so the near-duplicate search sees one representative per group."""
    png = tiny_png
    archive = tmp_path / "same.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(10_000):
            zf.writestr(f"{'AB'[i % 2]}/{i:05d}.png", png)
    seen = []
    real = audit_module.near_pairs

    def spy(codes, max_distance, **kw):
        seen.append(len(codes))
        pairs = real(codes, max_distance, **kw)
        seen.append(len(pairs))
        return pairs

    monkeypatch.setattr(audit_module, "near_pairs", spy)
    with open_dataset(archive) as index:
        report = audit_dataset(index, workers=2)
    assert seen == [1, 0]
    assert [len(g) for g in report.duplicate_groups] == [10_000]
    assert len(report.conflicting_labels) == 1 and report.near_duplicate_groups == []
    assert report.counts["all"] == {"A": 5000, "B": 5000}


def test_audit_stops_past_its_time_or_pixel_limit(tmp_path, chest_sample, monkeypatch):
    index = scan_dataset(chest_sample)
    with pytest.raises(DatasetError, match="took longer than the limit"):
        audit_dataset(index, max_seconds=1e-9)
    monkeypatch.setenv("MEDCLF_AUDIT_MAX_SECONDS", "0.000001")
    with pytest.raises(DatasetError, match="MEDCLF_AUDIT_MAX_SECONDS"):
        audit_dataset(index)
    monkeypatch.delenv("MEDCLF_AUDIT_MAX_SECONDS")
    monkeypatch.setattr(audit_module, "AUDIT_MAX_TOTAL_PIXELS", 10_000)
    with pytest.raises(DatasetError, match="gigapixels"):
        audit_dataset(index)


def test_audit_lists_damaged_and_blank_files(tmp_path, tiny_png):
    """Damaged-but-decodable JPEGs are listed with the decoder's warning; blank ones are refused (unreadable)."""
    from bad_inputs import _jpeg_with_zeroed_middle

    for cls in ("A", "B"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "ok.png").write_bytes(tiny_png)
    (tmp_path / "A" / "damaged.jpg").write_bytes(_jpeg_with_zeroed_middle())
    Image.new("L", (32, 32), 255).save(tmp_path / "B" / "white.png")
    report = audit_dataset(scan_dataset(tmp_path))
    assert [d["file"] for d in report.damaged] == ["A/damaged.jpg"]
    assert [u["file"] for u in report.unreadable] == ["B/white.png"] and "blank" in report.unreadable[0]["error"]
    assert any("damaged image data" in w for w in report.warnings())
    assert report.counts["all"] == {"A": 2, "B": 1}


def test_audit_source_sample_and_zip(tmp_path, pattern_dataset):
    """Moved from jobs.audit_source (issue 16): the Train page's dataset summary."""
    from helpers import CHEST_SAMPLE

    report = audit_source(CHEST_SAMPLE)
    assert report["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert report["n_images"] == 80 and report["counts"]["all"] == {"NORMAL": 40, "PNEUMONIA": 40}
    assert report["imbalance_ratio"] == 1.0 and report["unreadable"] == []
    assert report["channels"] == 1  # grey chest films

    (pattern_dataset / "square" / "broken.png").write_bytes(b"not an image")
    archive = shutil.make_archive(str(tmp_path / "ds"), "zip", root_dir=tmp_path, base_dir="patterns")
    report = audit_source(archive, extract_to=tmp_path / "extracted")
    assert report["root"].startswith(str((tmp_path / "extracted").resolve()))
    assert [u["file"] for u in report["unreadable"]] == ["square/broken.png"]
    assert any("could not be read" in w for w in report["warnings"])
    with pytest.raises(DatasetError):
        audit_source(tmp_path / "nope")

