"""configs/make_brain_dataset.py --sartaj: near-duplicate groups across the three brain sources.

A leaking split is silent, so the rule is checked on a tiny fake ``shared/data`` (empty files, the
manifests' real column names): links chain into one group, Br35H twins always join, a Sartaj link
between a ``no`` and a ``yes`` file is not followed, and the names carry group and source.
"""

from __future__ import annotations

import csv
import importlib.util
import re

from helpers import REPO

SARTAJ_COLS = ["file", "near_duplicate_of_brain_tumor_mri", "near_duplicate_of_brain_tumor_br35h",
               "near_duplicate_within_sartaj"]


def _script():
    spec = importlib.util.spec_from_file_location("make_brain_dataset", REPO / "configs" / "make_brain_dataset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _shared(tmp_path):
    """Navoneel yes/Y1, no/N1; Br35H y1 (twin of Y1), n1 (twin of Y1 under the other label), y2 (alone);
    Sartaj: g1 -> y2 (Br35H), g2 -> g1 (chain), m1 -> N1 (cross-label: ignored), no/s1 alone."""
    root = tmp_path / "data"
    files = ["brain_tumor_mri/yes/Y1.jpg", "brain_tumor_mri/no/N1.jpg", "brain_tumor_br35h/yes/y1.jpg",
             "brain_tumor_br35h/no/n1.jpg", "brain_tumor_br35h/yes/y2.jpg", "brain_tumor_sartaj/glioma/train_g (1).jpg",
             "brain_tumor_sartaj/glioma/train_g (2).jpg", "brain_tumor_sartaj/meningioma/m1.jpg",
             "brain_tumor_sartaj/no/s1.jpg"]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    (root / "manifests").mkdir()
    with open(root / "manifests" / "brain_tumor_br35h.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([["file", "near_duplicate_of_brain_tumor_mri"], [files[2], "yes/Y1.jpg"],
                     [files[3], "yes: yes/Y1.jpg"], [files[4], ""]])
    with open(root / "manifests" / "brain_tumor_sartaj.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([SARTAJ_COLS, [files[5], "", files[4], ""], [files[6], "", "", files[5]],
                     [files[7], files[1], "", ""], [files[8], "", "", ""]])
    return root


def test_three_sources_are_grouped_by_chained_links(tmp_path):
    counts = _script().build_three(_shared(tmp_path), tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").glob("*/*"))
    group = {re.sub(r"^G\d{4}__", "", n): (re.match(r"^(G\d{4})__", n) or [None])[0] for n in names}
    assert group["navoneel__Y1.jpg"] == group["br35h__y1.jpg"] == group["br35h__n1.jpg"] is not None
    assert group["br35h__y2.jpg"] == group["sartaj__glioma-train_g-1-.jpg"] == group["sartaj__glioma-train_g-2-.jpg"]
    assert group["br35h__y2.jpg"] not in (None, group["navoneel__Y1.jpg"])
    assert group["sartaj__meningioma-m1.jpg"] is None and group["navoneel__N1.jpg"] is None
    assert group["sartaj__no-s1.jpg"] is None
    assert (tmp_path / "out" / "yes" / next(n for n in names if n.endswith("meningioma-m1.jpg"))).is_symlink()
    assert sorted(p.name for p in (tmp_path / "out" / "no").iterdir())[-1].endswith("sartaj__no-s1.jpg")
    assert counts == {"navoneel": 2, "br35h": 3, "sartaj": 4, "sartaj_grouped": 2,
                      "cross_label_links_ignored": 1, "groups": 2}


def test_holding_out_a_source_keeps_out_only_its_files_that_share_no_group(tmp_path):
    # Navoneel Y1 is grouped with Br35H twins (it stays in training, with them); N1 shares no group: held out.
    counts = _script().build_three(_shared(tmp_path), tmp_path / "train", "navoneel", tmp_path / "held")
    held = sorted(p.name for p in (tmp_path / "held").glob("*/*"))
    train = sorted(p.name for p in (tmp_path / "train").glob("*/*"))
    assert held == ["navoneel__N1.jpg"]
    assert any(n.endswith("navoneel__Y1.jpg") for n in train) and not set(held) & set(train)
    assert len(train) == 8 and counts["navoneel"] == 1 and counts["navoneel_held_out"] == 1
