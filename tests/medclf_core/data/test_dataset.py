"""medclf_core.data.dataset: scanning layouts and zips, the audit, leak-free splits."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclf_core.data.dataset import (audit_dataset, safe_extract_zip, scan_dataset, split_counts, split_dataset,
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
    from medclf_core.data.dataset import group_key

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


# ---------------------------------------------------------------------------- bounded duplicate search (issue 17)

def _brute_components(codes: list[str], max_distance: int) -> set[frozenset[int]]:
    """Components of the all-pairs graph, the obvious quadratic way (small inputs only)."""
    from medclf_core.data.dataset import _UnionFind

    ints = [int(c, 16) for c in codes]
    uf = _UnionFind(len(codes))
    for i in range(len(codes)):
        for j in range(i + 1, len(codes)):
            if bin(ints[i] ^ ints[j]).count("1") <= max_distance:
                uf.union(i, j)
    comps: dict[int, set[int]] = {}
    for i in range(len(codes)):
        comps.setdefault(uf.find(i), set()).add(i)
    return {frozenset(c) for c in comps.values()}


def _components(pairs, n: int) -> set[frozenset[int]]:
    from medclf_core.data.dataset import _UnionFind

    uf = _UnionFind(n)
    for a, b in pairs:
        uf.union(a, b)
    comps: dict[int, set[int]] = {}
    for i in range(n):
        comps.setdefault(uf.find(i), set()).add(i)
    return {frozenset(c) for c in comps.values()}


def _flip(code: int, rng, n_bits: int, width: int = 256) -> int:
    for b in rng.choice(width, n_bits, replace=False):
        code ^= 1 << int(b)
    return code


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_distance", [0, 3, 8])
def test_near_pairs_finds_the_same_components_as_all_pairs(seed, max_distance):
    from medclf_core.data.dataset import _near_pairs

    rng = np.random.default_rng(seed)
    codes = []
    for _ in range(12):  # clusters: chains of small steps, exact repeats, and loners
        base = int.from_bytes(rng.bytes(32), "big")
        for _ in range(int(rng.integers(1, 8))):
            base = _flip(base, rng, int(rng.integers(0, 6)))
            codes.append(base)
    codes += codes[:5]
    order = rng.permutation(len(codes))
    hexes = [f"{codes[i]:064x}" for i in order]
    pairs = _near_pairs(hexes, max_distance)
    assert len(pairs) <= len(hexes) - 1
    assert _components(pairs, len(hexes)) == _brute_components(hexes, max_distance)


def test_near_pairs_of_thousands_of_close_codes_stays_linear():
    """3,000 codes all within a few bits of each other: the old search kept ~4.5 million pairs."""
    from medclf_core.data.dataset import _near_pairs

    rng = np.random.default_rng(0)
    base = int.from_bytes(rng.bytes(32), "big")
    codes = [f"{_flip(base, rng, 3):064x}" for _ in range(1500)] + [f"{base:064x}"] * 1500
    pairs = _near_pairs(codes, 8)
    assert len(pairs) == len(codes) - 1
    assert _components(pairs, len(codes)) == {frozenset(range(len(codes)))}


def test_near_pair_search_stops_past_its_deadline():
    import time

    from medclf_core.data.dataset import _near_pairs

    codes = [f"{i:064x}" for i in range(50)]
    with pytest.raises(DatasetError, match="took too long"):
        _near_pairs(codes, 8, deadline=time.monotonic() - 1)


def _tiny_png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(0, 240, 30, dtype=np.uint8), (8, 1))).save(buf, format="PNG")
    return buf.getvalue()


def test_audit_of_10000_identical_images_in_a_zip_is_bounded(tmp_path, monkeypatch):
    """Issue 17: 10,000 identical tiny PNGs took 64 s and 6.9 GB. Exact duplicates are grouped by hash
    first, so the near-duplicate search sees one representative per group."""
    import medclf_core.data.dataset as data_module

    png = _tiny_png()
    archive = tmp_path / "same.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(10_000):
            zf.writestr(f"{'AB'[i % 2]}/{i:05d}.png", png)
    seen = []
    real = data_module._near_pairs

    def spy(codes, max_distance, **kw):
        seen.append(len(codes))
        pairs = real(codes, max_distance, **kw)
        seen.append(len(pairs))
        return pairs

    monkeypatch.setattr(data_module, "_near_pairs", spy)
    with data_module.open_dataset(archive) as index:
        report = audit_dataset(index, workers=2)
    assert seen == [1, 0]
    assert [len(g) for g in report.duplicate_groups] == [10_000]
    assert len(report.conflicting_labels) == 1 and report.near_duplicate_groups == []
    assert report.counts["all"] == {"A": 5000, "B": 5000}


def test_audit_stops_past_its_time_or_pixel_limit(tmp_path, chest_sample, monkeypatch):
    import medclf_core.data.dataset as data_module

    index = scan_dataset(chest_sample)
    with pytest.raises(DatasetError, match="took longer than the limit"):
        audit_dataset(index, max_seconds=1e-9)
    monkeypatch.setenv("MEDCLF_AUDIT_MAX_SECONDS", "0.000001")
    with pytest.raises(DatasetError, match="MEDCLF_AUDIT_MAX_SECONDS"):
        audit_dataset(index)
    monkeypatch.delenv("MEDCLF_AUDIT_MAX_SECONDS")
    monkeypatch.setattr(data_module, "AUDIT_MAX_TOTAL_PIXELS", 10_000)
    with pytest.raises(DatasetError, match="gigapixels"):
        audit_dataset(index)


def test_scan_refuses_too_many_files(tmp_path, monkeypatch):
    import medclf_core.data.dataset as data_module

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.png").write_bytes(_tiny_png())
    monkeypatch.setattr(data_module, "DATASET_MAX_FILES", 5)
    with pytest.raises(DatasetError, match="6 image files; the limit is 5"):
        scan_dataset(tmp_path)


# ---------------------------------------------------------------------------- temporary extractions (issue 17)

def _class_zip(path, classes=("A", "B")):
    with zipfile.ZipFile(path, "w") as zf:
        for cls in classes:
            zf.writestr(f"wrap/{cls}/one.png", _tiny_png())
    return path


def test_zip_extraction_is_removed_when_the_dataset_is_released(tmp_path, monkeypatch):
    import tempfile

    from medclf_core.data.dataset import open_dataset, release_dataset

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    archive = _class_zip(tmp_path / "d.zip")
    with open_dataset(archive) as index:
        extracted = Path(index.extracted_to)
        assert extracted.is_dir() and Path(index.root).is_relative_to(extracted)
        assert extracted.name.startswith(f"medclf-zip-{os.getpid()}-")
    assert not extracted.exists()
    index = scan_dataset(archive)
    release_dataset(index)
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(DatasetError, match="at least two class folders") as info:
        scan_dataset(_class_zip(tmp_path / "one.zip", classes=("A",)))
    assert str(info.value).startswith("one.zip must") and "medclf-zip" not in str(info.value)  # no server path
    assert list((tmp_path / "tmp").iterdir()) == []  # a refused zip leaves nothing either
    own = tmp_path / "mine"
    with open_dataset(archive, extract_to=own) as index:
        assert index.extracted_to is None
    assert own.is_dir()  # a folder the caller chose is the caller's


def test_cli_audit_of_a_zip_leaves_no_temporary_folder(tmp_path):
    import subprocess
    import sys

    archive = _class_zip(tmp_path / "d.zip")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.run([sys.executable, "-c", "import sys; from medclf_core.cli.commands import main; "
                           f"sys.exit(main(['audit', {str(archive)!r}, '--json', '--no-progress']))"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in tmp.iterdir() if p.name.startswith("medclf-zip-")] == []


def test_stale_extractions_of_dead_processes_are_removed(tmp_path):
    import time

    from medclf_core.data.dataset import remove_stale_extractions

    dead = tmp_path / "medclf-zip-999999999-abc"
    alive = tmp_path / f"medclf-zip-{os.getpid()}-def"
    old_legacy, new_legacy, other = tmp_path / "medclf-zip-xyz", tmp_path / "medclf-zip-new", tmp_path / "keep-me"
    for d in (dead, alive, old_legacy, new_legacy, other):
        (d / "A").mkdir(parents=True)
    past = time.time() - 2 * 86400
    os.utime(old_legacy, (past, past))
    assert sorted(remove_stale_extractions(tmp_path)) == ["medclf-zip-999999999-abc", "medclf-zip-xyz"]
    assert alive.is_dir() and new_legacy.is_dir() and other.is_dir()


def test_the_next_extraction_removes_a_killed_processs_leftovers(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    dead = tmp_path / "tmp" / "medclf-zip-999999999-abc"
    (dead / "A").mkdir(parents=True)
    with data_open(_class_zip(tmp_path / "d.zip")):
        assert not dead.exists()


def data_open(path):
    from medclf_core.data.dataset import open_dataset

    return open_dataset(path)


def test_audit_lists_damaged_and_blank_files(tmp_path):
    """Damaged-but-decodable JPEGs are listed with the decoder's warning; blank ones are refused (unreadable)."""
    from bad_inputs import _jpeg_with_zeroed_middle

    for cls in ("A", "B"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "ok.png").write_bytes(_tiny_png())
    (tmp_path / "A" / "damaged.jpg").write_bytes(_jpeg_with_zeroed_middle())
    Image.new("L", (32, 32), 255).save(tmp_path / "B" / "white.png")
    report = audit_dataset(scan_dataset(tmp_path))
    assert [d["file"] for d in report.damaged] == ["A/damaged.jpg"]
    assert [u["file"] for u in report.unreadable] == ["B/white.png"] and "blank" in report.unreadable[0]["error"]
    assert any("damaged image data" in w for w in report.warnings())
    assert report.counts["all"] == {"A": 2, "B": 1}


def test_unrelated_codes_need_no_comparison(monkeypatch):
    """Pigeonhole bands set aside codes with no possible neighbour: 20,000 unrelated images, no all-pairs scan."""
    import medclf_core.data.dataset as data_module

    rng = np.random.default_rng(5)
    codes = [rng.bytes(32).hex() for _ in range(20_000)]
    close = int(codes[0], 16) ^ 0b1011  # one near pair among them
    codes.append(f"{close:064x}")
    compared = []
    real = data_module._within
    monkeypatch.setattr(data_module, "_within", lambda rows, cands, d: compared.append(len(rows) * len(cands))
                        or real(rows, cands, d))
    assert data_module._near_pairs(codes, 8) == [(0, 20_000)]
    assert sum(compared) < 10 * len(codes)


def test_a_test_only_folder_is_an_evaluation_set_but_not_a_training_set(tmp_path):
    """Issue 16: ``DATA/test/<class>/...`` is accepted for evaluation; training still asks for 'train'."""
    from helpers import make_pattern_dataset

    from medclf_core.data.dataset import audit_dataset, scan_dataset, split_dataset
    from medclf_core.errors import DatasetError

    make_pattern_dataset(tmp_path / "d" / "test", n_per_class=3)
    index = scan_dataset(tmp_path / "d")
    assert index.presplit and {it.split for it in index.items} == {"test"} and len(index.items) == 6
    with pytest.raises(DatasetError, match="no 'train' folder"):
        split_dataset(index, audit_dataset(index))


def test_an_image_file_given_as_a_dataset_says_what_a_dataset_is(tmp_path):
    from medclf_core.data.dataset import scan_dataset
    from medclf_core.errors import DatasetError

    f = tmp_path / "x.png"
    f.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="single file.*one subfolder per class"):
        scan_dataset(f)


def test_audit_source_sample_and_zip(tmp_path, pattern_dataset):
    """Moved from jobs.audit_source (issue 16): the Train page's dataset summary."""
    from helpers import CHEST_SAMPLE

    from medclf_core.data.dataset import audit_source
    from medclf_core.errors import DatasetError

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


def test_dataset_channels_grey_grey_saved_as_rgb_and_colour(tmp_path):
    """Issue 16: the Train page's default input follows the dataset's images."""
    from medclf_core.data.dataset import dataset_channels

    rng = np.random.default_rng(0)

    def write(root, colour: bool, as_rgb: bool):
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True)
            for i in range(3):
                grey = rng.integers(0, 255, (24, 24), dtype=np.uint8)
                if colour:
                    img = np.stack([grey, 255 - grey, rng.integers(0, 255, (24, 24), dtype=np.uint8)], axis=-1)
                else:
                    img = np.stack([grey] * 3, axis=-1) if as_rgb else grey
                Image.fromarray(img).save(root / cls / f"{i}.png")
        return scan_dataset(root)

    assert dataset_channels(write(tmp_path / "grey", colour=False, as_rgb=False)) == 1
    assert dataset_channels(write(tmp_path / "grey_rgb", colour=False, as_rgb=True)) == 1
    assert dataset_channels(write(tmp_path / "colour", colour=True, as_rgb=True)) == 3


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
    from medclf_core.errors import DatasetError

    f = tmp_path / "hospital.zip"
    f.write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(DatasetError, match="cannot be opened as a zip file"):
        scan_dataset(f)
