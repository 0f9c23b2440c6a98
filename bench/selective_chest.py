"""Build the chest model's held-out set at original resolution, for `medclf evaluate` (issue 24 item 4).

``../shared`` holds no chest X-rays from another hospital. The nearest thing: ``modality/XRAY`` holds
750 original-resolution Kermany films (max side 256 px) whose 224 px copies are in the chest model's
training folder. This script re-draws the model's train/val/test split exactly as training did (the
card's seed and group pattern; checked against the test files stored in ``evaluation.json``) and
links the ``modality/XRAY`` films whose copies fell in the **val or test** split (never trained on;
val did choose the temperature and threshold) into ``OUT/<class>/``. Same hospital, other
processing: not another source.

    PYTHONPATH=$PWD python bench/selective_chest.py /tmp/chest_heldout
    PYTHONPATH=$PWD python -m medclf_core.cli.commands evaluate models/chest-xray-pneumonia /tmp/chest_heldout --json
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared/data")


def held_out_names(model: Path, data: Path) -> dict[str, set[str]]:
    """``{"val": names, "test": names}`` (``CLASS/file``) of the model's split, re-drawn and checked."""
    from medclf_core.data.audit import audit_dataset
    from medclf_core.data.scan import scan_dataset
    from medclf_core.data.split import split_dataset

    cfg = json.loads((REPO / "configs" / "chest-xray-pneumonia.json").read_text())
    index = scan_dataset(data)
    report = audit_dataset(index, near_duplicate_distance=cfg.get("near_duplicate_distance", 8))
    splits = split_dataset(index, report, val_fraction=cfg.get("val_split", 0.15),
                           test_fraction=cfg.get("test_split", 0.15), seed=cfg["seed"],
                           group_pattern=cfg.get("group_pattern"))
    names = {s: {it.rel for it in splits[s]} for s in ("val", "test")}
    stored = {p["file"] for p in json.loads((model / "evaluation.json").read_text())["predictions"]}
    if names["test"] != stored:
        raise SystemExit(f"the re-drawn test split ({len(names['test'])}) is not the stored one ({len(stored)})")
    return names


def main(out: str) -> None:
    shared = SHARED
    names = held_out_names(REPO / "models" / "chest-xray-pneumonia", shared / "chest_xray_pneumonia" / "train")
    kept = {"val": 0, "test": 0}
    for row in csv.DictReader(open(shared / "manifests" / "modality.csv")):
        if not row["file"].startswith("modality/XRAY/"):
            continue
        rel = row["source_path"].split("/", 1)[1]  # train/NORMAL/x.jpeg -> NORMAL/x.jpeg
        split = next((s for s, n in names.items() if rel in n), None)
        if split:
            dest = Path(out) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                dest.symlink_to(shared / row["file"])
            kept[split] += 1
    print(f"linked {sum(kept.values())} films into {out} (val {kept['val']}, test {kept['test']})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/chest_heldout")
