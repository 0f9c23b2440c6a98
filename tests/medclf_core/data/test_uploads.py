"""Uploaded evaluation sets: staged as dataset folders, zip guards applied, nothing left on disk."""

from __future__ import annotations

import gc
import io
import zipfile

import pytest

from helpers import CHEST_SAMPLE

from medclf_core.data import uploads
from medclf_core.data.scan import scan_dataset
from medclf_core.errors import DatasetError


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _images(cls: str, n: int) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted((CHEST_SAMPLE / cls).iterdir())[:n]]


def test_a_zip_is_extracted_with_the_guards_and_removed(tmp_path):
    members = {f"set/test/{c}/{n}": b for c in ("NORMAL", "PNEUMONIA") for n, b in _images(c, 2)}
    members["../escape.png"] = b"x"
    staged = uploads.stage_zip(_zip(members), "../set.zip")
    index = scan_dataset(staged.root)
    assert index.presplit and index.class_names == ["NORMAL", "PNEUMONIA"] and len(index.items) == 4
    assert [s["file"] for s in staged.skipped] == ["../escape.png"]  # the zip-slip member is refused
    assert sorted(p.name for p in staged.folder.iterdir()) == ["data"]  # only the extracted images stay
    staged.remove()
    assert staged.removed and not staged.folder.exists()
    staged.remove()  # twice is harmless


def test_a_bad_zip_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setattr(uploads.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(DatasetError, match="cannot be opened as a zip"):
        uploads.stage_zip(b"PK\x03\x04 not a zip", "hospital-b.zip")
    with pytest.raises(DatasetError, match="at least two class folders"):
        uploads.stage_zip(_zip({f"NORMAL/{n}": b for n, b in _images("NORMAL", 2)}))
    assert list(tmp_path.iterdir()) == []


def test_images_by_class_with_unsafe_and_repeated_names():
    staged = uploads.stage_images({"NORMAL": [("../../a.jpeg", b"1"), ("a.jpeg", b"2"), (".hidden.png", b"3")],
                                   "PNEUMONIA": []})
    normal = sorted(p.name for p in (staged.folder / "data" / "NORMAL").iterdir())
    assert normal == ["a-2.jpeg", "a.jpeg", "hidden.png"]
    assert (staged.folder / "data" / "PNEUMONIA").is_dir()  # one class alone can be evaluated
    folder = staged.folder
    del staged
    gc.collect()
    assert not folder.exists()  # dropped (the session ended): removed
    with pytest.raises(DatasetError, match="at least one image"):
        uploads.stage_images({"NORMAL": [], "PNEUMONIA": []})
    with pytest.raises(DatasetError, match="class folder name"):
        uploads.stage_images({"../x": [("a.png", b"1")]})


def test_stale_uploads_go_but_a_running_jobs_data_and_recent_uploads_stay(tmp_path):
    import os
    import time

    day_ago = time.time() - 2 * 86400
    for name in ("old", "busy", "fresh"):
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data.zip").write_bytes(b"x")
    for name in ("old", "busy"):
        for path in (tmp_path / name, tmp_path / name / "data", tmp_path / name / "data.zip"):
            os.utime(path, (day_ago, day_ago))
    removed = uploads.remove_stale_uploads(tmp_path, in_use=[tmp_path / "busy" / "data.zip"])
    assert removed == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "fresh"]
    assert uploads.remove_stale_uploads(tmp_path / "missing") == []


def test_a_kept_upload_is_named_after_the_zip_not_the_extraction_folder(tmp_path):
    """ctmri.zip with CT/ and MRI/ at its top was named "data" (the extraction folder): the run was
    "data-efficientnet_lite0", task "data". The zip's stem names it now, for the audit and for the
    training job, which scans the extracted folder again."""
    from medclf_core.data.audit import audit_source

    zpath = tmp_path / "ct mri.zip"
    zpath.write_bytes(_zip({f"{c}/{n}": b for c in ("NORMAL", "PNEUMONIA") for n, b in _images(c, 3)}))
    extract = uploads.upload_extract_folder(tmp_path, zpath.name)
    report = audit_source(zpath, extract_to=extract)
    assert report["name"] == "ct-mri" and report["root"] == str(extract)
    assert scan_dataset(report["root"]).name == "ct-mri"  # what the training job sees
    assert scan_dataset(zpath, extract_to=tmp_path / "data").name == "ct-mri"  # a zip anywhere else too
