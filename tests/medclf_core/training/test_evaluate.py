"""medclf_core.training.evaluate: the card's figures, with intervals that resample what the split kept together."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

from helpers import CHEST_SAMPLE, TINY

from medclf_core.data.scan import Item
from medclf_core.training.evaluate import split_groups


def _session(near=(), pattern=None):
    report = SimpleNamespace(duplicate_groups=[], near_duplicate_groups=[list(g) for g in near])
    return SimpleNamespace(report=report, cfg=SimpleNamespace(group_pattern=pattern))


def test_groups_follow_the_splits_rule_patients_and_near_duplicates():
    items = [Item(path=f"/d/{r}", rel=r, label=0, split=None)
             for r in ("A/p1_a.png", "A/p1_b.png", "A/p2_a.png", "B/x.png", "B/x_copy.png")]
    ids = split_groups(items, _session(near=[("B/x.png", "B/x_copy.png")], pattern=r"^(p\d+)_"))
    assert ids[0] == ids[1] and ids[3] == ids[4] and len({ids[0], ids[2], ids[3]}) == 3
    assert split_groups(items, _session()) is None  # every image alone: the image bootstrap, as before
    assert split_groups(items, SimpleNamespace(report=None, cfg=None)) is None


def test_a_runs_card_says_its_intervals_resampled_patients(tmp_path):
    """Two films per patient: the test split's intervals resample patients, and the card says how many."""
    from medclf_core.training import TrainConfig, train

    data = tmp_path / "data"
    for cls in ("NORMAL", "PNEUMONIA"):
        films = sorted((CHEST_SAMPLE / cls).iterdir())
        (data / cls).mkdir(parents=True)
        for i, f in enumerate(films):
            shutil.copy(f, data / cls / f"p{cls[0]}{i // 2:02d}_{i % 2}{f.suffix}")
    cfg = TrainConfig(data=str(data), arch="simple_cnn", epochs=1, image_size=TINY, channels=1, batch_size=16,
                      name="paired", group_pattern=r"^(p[NP]\d+)_")
    run = train(cfg, models_dir=tmp_path / "models")
    card = json.loads((run / "card.json").read_text())
    tested = json.loads((run / "evaluation.json").read_text())["predictions"]
    patients = {p["file"].split("/")[-1].split("_")[0] for p in tested}
    assert card["metrics"]["n"] == len(tested) == 2 * len(patients)  # both films of each patient on one side
    assert card["metrics"]["n_groups"] == len(patients) and len(card["metrics"]["ci95"]["accuracy"]) == 2
    assert card["validation_metrics"]["n_groups"] == card["validation_metrics"]["n"] // 2
