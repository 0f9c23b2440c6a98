"""Fixtures shared by the dataset tests: a tiny PNG, and the chest sample with planted problems."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def tiny_png() -> bytes:
    """An 8x8 grey ramp as PNG bytes (identical every time: the audit sees exact duplicates)."""
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(0, 240, 30, dtype=np.uint8), (8, 1))).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def planted(tmp_path, chest_sample):
    """Chest sample plus an exact copy, a re-encoded copy, a cross-class copy, and two broken files:
    ``(root, sorted NORMAL files)``."""
    root = tmp_path / "planted"
    shutil.copytree(chest_sample, root)
    normals = sorted((root / "NORMAL").iterdir())
    shutil.copy(normals[0], root / "NORMAL" / "copy of first.jpeg")
    Image.open(normals[1]).resize((300, 300)).save(root / "NORMAL" / "rescaled.png")
    shutil.copy(normals[2], root / "PNEUMONIA" / "mislabelled.jpeg")
    (root / "PNEUMONIA" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "NORMAL" / "empty.png").write_bytes(b"")
    return root, normals
