"""Zip guards: the one set of checks for every zip a user hands medclf.

A dataset upload (:func:`medclf_core.data.extract.safe_extract_zip`) and a ``.keras`` model file
(:func:`medclf_core.registry.store.load_model_file`, a ``.keras`` file is a zip) are both checked here,
from the central directory alone, before anything is inflated:

- :func:`limit_violation`: too many members, too many bytes once unpacked, or a compression
  ratio typical of zip bombs (only above :attr:`ZipLimits.ratio_floor` unpacked bytes: small
  files of zeros legitimately compress far better than any real image or weights file);
- :func:`unsafe_member_reason`: a member that would escape the target folder (absolute path,
  ``..``, backslash or drive-letter path), a link or a special file, or an encrypted member.

Each caller words the refusal for its own user (a dataset or a model), so these functions
report *what* is wrong and leave the message and the exception type to the caller.

Example::

    >>> import io, zipfile
    >>> buf = io.BytesIO()
    >>> with zipfile.ZipFile(buf, "w") as zf:
    ...     zf.writestr("a/ok.png", b"x")
    ...     zf.writestr("../up.png", b"x")
    >>> infos = zipfile.ZipFile(buf).infolist()
    >>> limit_violation(infos, ZipLimits(max_members=1, max_total_bytes=2**20, max_ratio=100))
    Violation(kind='members', members=2, unpacked=2, packed=2)
    >>> [unsafe_member_reason(i) for i in infos]
    [None, 'unsafe path']
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Below this many unpacked bytes the ratio is not checked: a small member of zeros compresses
# 1000:1 and harms no one; a bomb needs volume to do damage.
RATIO_FLOOR_BYTES = 50 * 2**20


@dataclass(frozen=True)
class ZipLimits:
    """The most members, unpacked bytes and unpacked/packed ratio an archive may have."""

    max_members: int
    max_total_bytes: int
    max_ratio: float
    ratio_floor: int = RATIO_FLOOR_BYTES


@dataclass(frozen=True)
class Violation:
    """Which limit an archive breaks (``kind``: ``"members"``, ``"total"`` or ``"ratio"``) and its sizes."""

    kind: str
    members: int
    unpacked: int
    packed: int


def limit_violation(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> Violation | None:
    """The first limit of ``limits`` that the archive with members ``infos`` breaks, else None.

    Sizes are those the central directory declares; extraction must still never read a member
    past its declared size (``ZipFile.open`` stops there and fails the checksum).
    """
    unpacked = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    facts = {"members": len(infos), "unpacked": unpacked, "packed": packed}
    if len(infos) > limits.max_members:
        return Violation("members", **facts)
    if unpacked > limits.max_total_bytes:
        return Violation("total", **facts)
    if unpacked > limits.ratio_floor and unpacked / packed > limits.max_ratio:
        return Violation("ratio", **facts)
    return None


def unsafe_member_reason(info: zipfile.ZipInfo, dest: Path | None = None) -> str | None:
    """Why a member must not be extracted or trusted, or None.

    ``"symbolic link"``, ``"special file (device, pipe or socket)"``, ``"unsafe path"`` (absolute,
    ``..``, backslashes, a NUL, a drive letter; with ``dest``, also any name that resolves outside
    it) or ``"encrypted"``.
    """
    name = info.filename
    file_type = (info.external_attr >> 16) & 0o170000
    if file_type == 0o120000:
        return "symbolic link"
    if file_type not in (0, 0o100000, 0o040000):
        return "special file (device, pipe or socket)"
    parts = Path(name).parts
    if (name.startswith(("/", "\\")) or ".." in parts or "\\" in name or "\0" in name
            or (parts and ":" in parts[0])):
        return "unsafe path"
    if dest is not None and not str((dest / name).resolve()).startswith(str(dest) + os.sep):
        return "unsafe path"
    if info.flag_bits & 0x1:
        return "encrypted"
    return None
