"""medclf_core.data.extract: dataset zips a user uploads (no escape from the target folder, no bombs, a report
of what was skipped) and the temporary folders they are extracted into (removed when released, at exit,
or by the next process when the one that made them was killed).

The member-count, size and ratio limits, shared with .keras model files, are in tests/medclf_core/io/test_archive.py.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest
from bad_inputs import encode, gradient
from PIL import Image

from medclf_core.data.extract import remove_stale_extractions, safe_extract_zip
from medclf_core.data.scan import open_dataset, release_dataset, scan_dataset
from medclf_core.errors import DatasetError

PNG = encode(Image.fromarray(gradient()), "PNG")


def _zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)


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


def test_escapes_links_and_special_files_are_skipped_and_reported(tmp_path):
    fifo = zipfile.ZipInfo("a/pipe")
    fifo.external_attr = 0o010644 << 16  # a named pipe
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/ok.png", PNG)
        zf.writestr("a/../../up.png", PNG)
        zf.writestr("..\\..\\windows.png", PNG)
        zf.writestr("C:/drive.png", PNG)
        zf.writestr(fifo, b"")
    dest = tmp_path / "out"
    skipped = safe_extract_zip(archive, dest)
    reasons = {s["file"]: s["reason"] for s in skipped}
    assert reasons == {"a/../../up.png": "unsafe path", "..\\..\\windows.png": "unsafe path",
                       "C:/drive.png": "unsafe path", "a/pipe": "special file (device, pipe or socket)"}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == \
        ["evil.zip", "out/a/ok.png"]


def _lie_about_size(data: bytes, claimed: int) -> bytes:
    """Patch the central directory so the member claims ``claimed`` uncompressed bytes."""
    raw = bytearray(data)
    cd = raw.index(b"PK\x01\x02")
    raw[cd + 24: cd + 28] = struct.pack("<I", claimed)
    local = raw.index(b"PK\x03\x04")
    raw[local + 22: local + 26] = struct.pack("<I", claimed)
    return bytes(raw)


def test_member_larger_than_its_header_claims_never_inflates_past_the_claim(tmp_path):
    """A member whose header claims 1000 bytes but inflates to 5 MB (a disguised bomb):
    reading stops at the claim, the checksum fails, and the member is skipped."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("c/a.bin", b"\0" * 5_000_000)
        zf.writestr("c/b.png", PNG)
    archive = tmp_path / "lying.zip"
    archive.write_bytes(_lie_about_size(buf.getvalue(), 1000))
    skipped = safe_extract_zip(archive, tmp_path / "out")
    assert skipped == [{"file": "c/a.bin", "reason": "damaged (BadZipFile)"}]
    assert not (tmp_path / "out" / "c" / "a.bin").exists() and (tmp_path / "out" / "c" / "b.png").is_file()


def test_damaged_member_is_skipped_not_fatal(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("c/good.png", PNG)
        zf.writestr("c/bad.png", PNG)
    raw = bytearray(buf.getvalue())
    second = raw.index(b"PK\x03\x04", 4)
    raw[second + 60] ^= 0xFF  # flip a byte of the stored data: CRC mismatch
    archive = tmp_path / "crc.zip"
    archive.write_bytes(bytes(raw))
    skipped = safe_extract_zip(archive, tmp_path / "out")
    assert skipped == [{"file": "c/bad.png", "reason": "damaged (BadZipFile)"}]
    assert (tmp_path / "out" / "c" / "good.png").is_file() and not (tmp_path / "out" / "c" / "bad.png").exists()


def test_encrypted_member_is_skipped(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("c/secret.png", PNG)
    raw = bytearray(buf.getvalue())
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.index(sig)
        raw[at + offset] |= 0x1  # general purpose flag bit 0: encrypted
    archive = tmp_path / "enc.zip"
    archive.write_bytes(bytes(raw))
    assert safe_extract_zip(archive, tmp_path / "out") == [{"file": "c/secret.png", "reason": "encrypted"}]


@pytest.mark.parametrize("payload", [b"", b"PK\x03\x04 truncated", b"not a zip at all"])
def test_unreadable_archives_are_dataset_errors(tmp_path, payload):
    archive = tmp_path / "x.zip"
    archive.write_bytes(payload)
    with pytest.raises(DatasetError):
        safe_extract_zip(archive, tmp_path / "out")


def test_long_names_and_file_folder_clashes_skip_one_member_not_the_extraction(tmp_path):
    """Issue 17 item 7: the cleanup in the except clause raised too, aborting everything."""
    long_name = "x" * 300 + ".png"
    archive = tmp_path / "clash.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("c/first.png", PNG)
        zf.writestr(f"c/{long_name}", PNG)  # a name component over 255 characters
        zf.writestr(f"c/{'y' * 300}/inner.png", PNG)  # a folder component over 255 characters
        zf.writestr("c/sub/a.png", PNG)
        zf.writestr("c/sub", PNG)  # a file named like an extracted folder
        zf.writestr("c/flat.png", PNG)
        zf.writestr("c/flat.png/b.png", PNG)  # a folder named like an extracted file
        zf.writestr(zipfile.ZipInfo("c/first.png/"), b"")  # a folder entry named like a file
        zf.writestr("c/last.png", PNG)
    dest = tmp_path / "out"
    skipped = safe_extract_zip(archive, dest)
    reasons = {s["file"]: s["reason"] for s in skipped}
    assert reasons == {f"c/{long_name}": "name too long for the file system",
                       f"c/{'y' * 300}/inner.png": "name too long for the file system",
                       "c/sub": "a folder of the same name was already extracted",
                       "c/flat.png/b.png": "its folder clashes with a file of the same name",
                       "c/first.png/": "a file of the same name was already extracted"}
    assert all(str(tmp_path) not in r and "Errno" not in r for r in reasons.values())
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == \
        ["c/first.png", "c/flat.png", "c/last.png", "c/sub/a.png"]
    assert (dest / "c" / "first.png").read_bytes() == PNG


def test_unopenable_archive_message_has_no_server_path(tmp_path):
    missing = tmp_path / "secret-server-folder" / "gone.zip"
    with pytest.raises(DatasetError) as info:
        safe_extract_zip(missing, tmp_path / "out")
    assert "secret-server-folder" not in str(info.value)


def _class_zip(path, png: bytes, classes=("A", "B")):
    with zipfile.ZipFile(path, "w") as zf:
        for cls in classes:
            zf.writestr(f"wrap/{cls}/one.png", png)
    return path


def test_zip_extraction_is_removed_when_the_dataset_is_released(tmp_path, monkeypatch, tiny_png):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    archive = _class_zip(tmp_path / "d.zip", tiny_png)
    with open_dataset(archive) as index:
        extracted = Path(index.extracted_to)
        assert extracted.is_dir() and Path(index.root).is_relative_to(extracted)
        assert extracted.name.startswith(f"medclf-zip-{os.getpid()}-")
    assert not extracted.exists()
    index = scan_dataset(archive)
    release_dataset(index)
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(DatasetError, match="at least two class folders") as info:
        scan_dataset(_class_zip(tmp_path / "one.zip", tiny_png, classes=("A",)))
    assert str(info.value).startswith("one.zip must") and "medclf-zip" not in str(info.value)  # no server path
    assert list((tmp_path / "tmp").iterdir()) == []  # a refused zip leaves nothing either
    own = tmp_path / "mine"
    with open_dataset(archive, extract_to=own) as index:
        assert index.extracted_to is None
    assert own.is_dir()  # a folder the caller chose is the caller's


def test_cli_audit_of_a_zip_leaves_no_temporary_folder(tmp_path, tiny_png):
    import subprocess
    import sys

    archive = _class_zip(tmp_path / "d.zip", tiny_png)
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

    dead = tmp_path / "medclf-zip-999999999-abc"
    alive = tmp_path / f"medclf-zip-{os.getpid()}-def"
    old_legacy, new_legacy, other = tmp_path / "medclf-zip-xyz", tmp_path / "medclf-zip-new", tmp_path / "keep-me"
    for d in (dead, alive, old_legacy, new_legacy, other):
        (d / "A").mkdir(parents=True)
    past = time.time() - 2 * 86400
    os.utime(old_legacy, (past, past))
    assert sorted(remove_stale_extractions(tmp_path)) == ["medclf-zip-999999999-abc", "medclf-zip-xyz"]
    assert alive.is_dir() and new_legacy.is_dir() and other.is_dir()


def test_the_next_extraction_removes_a_killed_processs_leftovers(tmp_path, monkeypatch, tiny_png):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    dead = tmp_path / "tmp" / "medclf-zip-999999999-abc"
    (dead / "A").mkdir(parents=True)
    with open_dataset(_class_zip(tmp_path / "d.zip", tiny_png)):
        assert not dead.exists()

