"""medclf_core.io.pixels: the bottom layer of decoding, and the one-way imports built on it."""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest
from bad_inputs import dicom_bytes, encode, gradient
from helpers import REPO
from PIL import Image

from medclf_core.errors import ImageError
from medclf_core.io import pixels
from medclf_core.io.images import load_image

# io module -> the io modules it must never import, at module level or inside a function
# (one direction: pixels <- dicom_header <- deid <- dicom <- images; archive stands alone)
LAYERS = {"pixels": ("images", "dicom", "deid", "dicom_header"), "dicom_header": ("images", "dicom", "deid"),
          "deid": ("images", "dicom"), "dicom": ("images",), "archive": ("images", "dicom", "deid", "dicom_header")}


def _imported_medclf_modules(module: str) -> set[str]:
    tree = ast.parse((REPO / "medclf_core" / "io" / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n.split(".")[2] for n in names if n.startswith("medclf_core.io.") and n.count(".") >= 2}


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_lower_layers_never_import_the_upper_ones(module):
    assert not _imported_medclf_modules(module) & set(LAYERS[module])


@pytest.mark.parametrize("module", ["pixels", "archive", "dicom_header", "deid", "dicom", "images"])
def test_each_module_imports_alone_and_pulls_in_no_upper_layer(module):
    code = (f"import sys, medclf_core.io.{module}\n"
            "print(' '.join(m for m in ('images', 'dicom', 'deid', 'dicom_header') if 'medclf_core.io.' + m in sys.modules))\n"
            "print('pydicom' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    names, pydicom_loaded = res.stdout.splitlines()[-2:]
    loaded = set(names.split())
    assert not loaded & set(LAYERS.get(module, ()))
    if module == "images":
        assert "dicom" in loaded  # the one direction: images dispatches DICOM to dicom
    # pydicom is imported on the first DICOM, not by every module that may decode one
    assert pydicom_loaded == str(module == "deid")


def test_one_home_for_each_name():
    """No re-exports: the decoded-image type and the limits live in pixels, DICOM parsing in dicom_header."""
    from medclf_core.io import deid, dicom, images

    assert not any(hasattr(images, name) for name in ("check_upload_size", "MAX_SIDE", "MAX_FILE_BYTES", "DicomFacts"))
    assert not hasattr(dicom, "quiet_pydicom") and not hasattr(deid, "read_dataset")


def test_lowered_size_limit_applies_to_pillow_and_dicom_decodes(monkeypatch):
    monkeypatch.setattr(pixels, "MAX_SIDE", 16)
    png = load_image(encode(Image.fromarray(gradient(48, 64)), "PNG"))
    dcm = load_image(dicom_bytes(gradient(48, 64)))
    assert png.pixels.shape == dcm.pixels.shape == (12, 16)
    assert any("large image" in n for n in png.notes) and any("large image" in n for n in dcm.notes)


def test_lowered_file_limit_applies_to_every_reader(monkeypatch, tmp_path):
    from medclf_core.io.deid import read_header

    path = tmp_path / "a.dcm"
    path.write_bytes(dicom_bytes(gradient(16, 16)))
    monkeypatch.setattr(pixels, "MAX_FILE_BYTES", 100)
    for read in (load_image, read_header, pixels.read_bytes):
        with pytest.raises(ImageError, match="too large"):
            read(path)


def test_non_dicom_images_carry_no_header_facts():
    img = load_image(encode(Image.fromarray(gradient()), "PNG"))
    assert img.dicom is None and img.source_format == "PNG"
    assert isinstance(img.pixels, np.ndarray)
