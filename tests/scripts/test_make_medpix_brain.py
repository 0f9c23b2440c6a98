"""configs/make_medpix_brain.py: MedPix head MRIs labelled tumour or not by their case, built as links."""

from __future__ import annotations

import csv
import importlib.util

import pytest
from helpers import REPO


def _script():
    spec = importlib.util.spec_from_file_location("make_medpix_brain", REPO / "configs" / "make_medpix_brain.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _shared(tmp_path, rows):
    """A ../shared/data with a modality manifest and one placeholder file per row (case, sequence, location)."""
    root = tmp_path / "data"
    (root / "manifests").mkdir(parents=True)
    with open(root / "manifests" / "modality.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "processing"])
        for i, (case, sequence, location) in enumerate(rows):
            name = f"modality/MRI/{case}_synpic{i}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"x")
            facts = f"case={case}; modality_field={sequence}; location={location}"
            w.writerow([name, f"300x300->256x256 JPEG q90; {facts}"])
    return root


def test_the_label_table_gives_every_case_a_label_or_a_reason_to_leave_it_out():
    with open(REPO / "configs" / "medpix_head_cases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["label"] for r in rows} == {"yes", "no", ""}
    for r in rows:
        assert r["why"], r
        if r["label"] == "no":  # "no tumour" is never a case MedPix files as a neoplasm
            assert not r["medpix_category"].startswith("Neoplasm"), r
    labels = _script().case_labels()
    assert labels["MPX1134"] == "yes" and labels["MPX1202"] == "no"  # glioblastoma; stroke
    assert "MPX1514" not in labels  # oropharyngeal cancer: a tumour, but not in the skull


def test_structural_head_slices_of_labelled_cases_are_linked_under_their_case_label(tmp_path, monkeypatch):
    mod = _script()
    monkeypatch.setattr(mod, "case_labels", lambda: {"MPX1": "yes", "MPX2": "no"})
    shared = _shared(tmp_path, [("MPX1", "MR - T1W w/Gadolinium", "Head"),
                                ("MPX1", "MR - DWI Diffusion Weighted", "Head"), ("MPX2", "MR - T2 weighted", "Head"), ("MPX2", "MR - T2 weighted", "Spine and Muscles"),
                                ("MPX3", "MR - FLAIR", "Head")])
    assert mod.build(shared, tmp_path / "out") == {"no": 1, "yes": 1, "left out": 1}
    assert sorted(p.name for p in (tmp_path / "out").glob("*/*")) == ["MPX1_synpic0.jpg", "MPX2_synpic2.jpg"]
    assert all(p.is_symlink() for p in (tmp_path / "out").glob("*/*"))
    assert mod.build(shared, tmp_path / "all", all_sequences=True)["yes"] == 2  # the diffusion slice too


def test_the_case_split_is_by_label_disjoint_and_seeded():
    mod = _script()
    labels = {f"MPX{i}": ("yes" if i % 3 == 0 else "no") for i in range(30)}
    train, held = mod.split_cases(labels, seed=0)
    assert train | held == set(labels) and not train & held
    assert sum(labels[c] == "yes" for c in train) == 5 and sum(labels[c] == "no" for c in train) == 10
    assert mod.split_cases(labels, seed=0) == (train, held) and mod.split_cases(labels, seed=1) != (train, held)


def test_the_four_source_folder_needs_the_three_source_folder_first(tmp_path):
    with pytest.raises(SystemExit, match="make_brain_dataset.py --sartaj --hold-out navoneel"):
        _script().build_four(tmp_path / "data", tmp_path / "build")
