"""configs/make_modality_external.py: the modality model's other-source folder, built as links by class."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import REPO


def _script():
    spec = importlib.util.spec_from_file_location("make_modality_external", REPO / "configs" / "make_modality_external.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _shared(tmp_path, with_ct=True):
    root = tmp_path / "data"
    files = ["brain_tumor_mri/no/1 no.jpeg", "brain_tumor_mri/yes/Y1.jpg", "brain_tumor_br35h/yes/y1.jpg",
             "brain_tumor_sartaj/glioma/g (1).jpg", "dicom_samples/MR/MR_small.dcm", "dicom_samples/CR/RG1.dcm"]
    files += ["dicom_samples/CT/CT_small.dcm"] if with_ct else []
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"x")
    return root


@pytest.mark.parametrize("navoneel_only, mri", [(False, 5), (True, 3)])
def test_every_source_lands_in_its_modality_folder_as_a_link(tmp_path, navoneel_only, mri):
    counts = _script().build(_shared(tmp_path), tmp_path / "out", navoneel_only)
    assert counts == {"CT": 1, "MRI": mri, "XRAY": 1}
    links = list((tmp_path / "out").glob("*/*"))
    assert len(links) == 2 + mri and all(p.is_symlink() for p in links)


def test_a_missing_modality_stops_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="no CT images"):
        _script().build(_shared(tmp_path, with_ct=False), tmp_path / "out")
