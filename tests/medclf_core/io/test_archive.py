"""medclf_core.io.archive: one set of zip guards, for dataset zips and for .keras model files.

The limit tests run against both users of the guards: a dataset upload (DatasetError) and a
.keras file (ModelError), each refused before anything is inflated.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from bad_inputs import encode, gradient
from PIL import Image

import medclf_core.data.extract as extract_module
import medclf_core.registry.store as registry_module
from medclf_core.io.archive import RATIO_FLOOR_BYTES, Violation, ZipLimits, limit_violation, unsafe_member_reason
from medclf_core.data.extract import safe_extract_zip
from medclf_core.errors import DatasetError, ModelError
from medclf_core.registry.store import load_model_file

PNG = encode(Image.fromarray(gradient()), "PNG")


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return path


def _infos(tmp_path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(_zip(tmp_path / "x.zip", members, compression)) as zf:
        return zf.infolist()


LIMITS = ZipLimits(max_members=3, max_total_bytes=2 * RATIO_FLOOR_BYTES, max_ratio=100)


def test_limits_each_kind(tmp_path):
    assert limit_violation(_infos(tmp_path, {"a": b"x", "b": b"y"}), LIMITS) is None
    assert limit_violation(_infos(tmp_path, {str(i): b"x" for i in range(4)}), LIMITS).kind == "members"
    small_zeros = _infos(tmp_path, {"z": b"\0" * 2**20})  # ~1000:1, but too small to harm: allowed
    assert limit_violation(small_zeros, LIMITS) is None
    bomb = limit_violation(_infos(tmp_path, {"z": b"\0" * (RATIO_FLOOR_BYTES + 1)}), LIMITS)
    assert bomb.kind == "ratio" and bomb.members == 1 and bomb.unpacked == RATIO_FLOOR_BYTES + 1
    stored = _infos(tmp_path, {"z": b"\0" * (2 * RATIO_FLOOR_BYTES + 1)}, zipfile.ZIP_STORED)  # ratio 1, too big
    assert limit_violation(stored, LIMITS) == Violation("total", 1, 2 * RATIO_FLOOR_BYTES + 1,
                                                        stored[0].compress_size)


def test_unsafe_members(tmp_path):
    def info(name, mode=0o100644, flags=0):
        i = zipfile.ZipInfo(name)
        i.external_attr, i.flag_bits = mode << 16, flags
        return i

    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "inside").symlink_to(tmp_path)  # a link already in the target folder
    cases = {"a/ok.png": None, "a/../../up.png": "unsafe path", "..\\w.png": "unsafe path", "/abs.png": "unsafe path",
             "C:/drive.png": "unsafe path"}
    for name, reason in cases.items():
        assert unsafe_member_reason(info(name)) == reason, name
        assert unsafe_member_reason(info(name), dest) == reason, name
    assert unsafe_member_reason(info("inside/x.png")) is None  # by name alone it looks fine ...
    assert unsafe_member_reason(info("inside/x.png"), dest) == "unsafe path"  # ... but it resolves outside
    assert unsafe_member_reason(info("l", 0o120777)) == "symbolic link"
    assert unsafe_member_reason(info("p", 0o010644)) == "special file (device, pipe or socket)"
    assert unsafe_member_reason(info("s.png", flags=0x1)) == "encrypted"
    assert unsafe_member_reason(info("dir/", 0o040755)) is None


# --------------------------------------------------------------------- the same guards, both users

def _refuse_dataset(archive: Path, tmp_path):
    return safe_extract_zip(archive, tmp_path / "out")


def _refuse_model(archive: Path, tmp_path):
    model = archive.rename(archive.with_suffix(".keras"))
    return load_model_file(model)


USERS = {"dataset": (_refuse_dataset, DatasetError, extract_module, "ZIP_MAX_MEMBERS", "ZIP_MAX_TOTAL_BYTES"),
         "model": (_refuse_model, ModelError, registry_module, "MODEL_MAX_MEMBERS", "MODEL_MAX_UNPACKED_BYTES")}


@pytest.mark.parametrize("user", sorted(USERS))
def test_member_count_limit(tmp_path, monkeypatch, user):
    refuse, error, module, members_limit, _ = USERS[user]
    monkeypatch.setattr(module, members_limit, 5)
    archive = _zip(tmp_path / "many.zip", {"config.json": b"{}", **{f"c/{i}.png": PNG for i in range(5)}})
    with pytest.raises(error, match="6 entries"):
        refuse(archive, tmp_path)
    if user == "dataset":
        with pytest.raises(DatasetError, match="6 entries; the limit is 5"):
            refuse(archive, tmp_path)


@pytest.mark.parametrize("user", sorted(USERS))
def test_total_size_limit(tmp_path, monkeypatch, user):
    refuse, error, module, _, total_limit = USERS[user]
    monkeypatch.setattr(module, total_limit, 2**20)
    archive = _zip(tmp_path / "big.zip", {"config.json": b"{}", "c/a.bin": b"\1" * (2**20 + 10)})
    with pytest.raises(error, match="would unpack to"):
        refuse(archive, tmp_path)
    assert not (tmp_path / "out" / "c" / "a.bin").exists()


@pytest.mark.parametrize("user", sorted(USERS))
def test_zip_bomb_refused(tmp_path, user):
    refuse, error, *_ = USERS[user]
    archive = _zip(tmp_path / "bomb.zip", {"config.json": b"{}", "a/zeros.bin": b"\0" * (60 * 2**20)})
    with pytest.raises(error, match="zip bomb" if user == "dataset" else "suspicious compression ratio"):
        refuse(archive, tmp_path)


def test_a_model_file_with_unsafe_entries_is_refused_before_keras_opens_it(tmp_path):
    archive = tmp_path / "evil.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("../../outside.h5", b"x")
    with pytest.raises(ModelError, match="unsafe paths"):
        load_model_file(archive)
