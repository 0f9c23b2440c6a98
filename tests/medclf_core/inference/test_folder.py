"""medclf_core.inference.folder: a model over a dataset folder, one metrics rule for every source."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.errors import DatasetError
from medclf_core.inference.folder import evaluate_folder, evaluate_predictions, predict_folder
from medclf_core.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor.from_run(trained_run)


def test_evaluate_folder(predictor, chest_sample):
    r = evaluate_folder(predictor, chest_sample, bootstrap=0)
    assert r["n"] == 80 and r["split"] == "all"
    assert list(r)[-6:] == ["split", "dataset", "skipped", "model", "temperature", "ood"]  # `--json` as before
    assert "predictions" not in r


def test_a_group_pattern_makes_the_intervals_resample_patients(predictor, chest_sample):
    by_image = evaluate_folder(predictor, chest_sample, bootstrap=200)
    by_class = evaluate_folder(predictor, chest_sample, bootstrap=200, group_pattern=r"^(IM|NORMAL2|person)")
    assert "n_groups" not in by_image and by_class["n_groups"] == 3  # IM-..., NORMAL2-IM-..., person...
    assert by_class["accuracy"] == by_image["accuracy"] and by_class["auc"] == by_image["auc"]
    assert by_class["ci95"] != by_image["ci95"]
    assert by_class["group_note"] is None  # every name matched
    some = evaluate_folder(predictor, chest_sample, bootstrap=0, group_pattern=r"^person")
    assert some["n_groups"] == 41  # the 40 names it does not match: each a patient of its own
    assert some["group_note"].startswith("The patient pattern matched 40 of the 80 file names")
    unmatched = evaluate_folder(predictor, chest_sample, bootstrap=0, group_pattern=r"^no-such-name")
    assert "n_groups" not in unmatched and "matched none of the 80" in unmatched["group_note"]  # images, and says so


def test_evaluate_folder_rejects_unknown_classes(predictor, pattern_dataset):
    with pytest.raises(DatasetError, match="does not know"):
        evaluate_folder(predictor, pattern_dataset)


def test_the_page_and_the_cli_get_the_same_figures(predictor, chest_sample):
    """with_predictions: the predictions behind the figures, and evaluate_predictions of them gives the figures."""
    seen = []
    r = evaluate_folder(predictor, chest_sample, bootstrap=20, with_predictions=True,
                        progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (80, 80) and len(seen) == 80
    p = r["predictions"]
    plain = predict_folder(predictor, chest_sample)
    np.testing.assert_allclose(p["probs"], plain["probs"], atol=1e-6)
    again = evaluate_predictions(p, threshold=predictor.threshold, positive=predictor.positive, bootstrap=20)
    for key in ("accuracy", "auc", "sensitivity", "specificity", "confusion_matrix", "ci"):
        assert again.get(key) == r.get(key), key
    assert again["ood"]["n_flagged"] == r["ood"]["n_flagged"]
    stored = {k: p[k] for k in ("y_true", "probs", "class_names")}  # e.g. a run's stored test split: no flags
    assert evaluate_predictions(stored, threshold=predictor.threshold, positive=predictor.positive,
                                bootstrap=0)["ood"] is None


def test_evaluate_folder_has_the_selective_entry(predictor, chest_sample):
    """Coverage 1.0 answers every image (the top-level figures); both orderings when the gate scored them."""
    r = evaluate_folder(predictor, chest_sample, bootstrap=0)
    s = r["selective"]
    assert s["n"] == r["n"] == 80 and s["n_refused"] == r["ood"]["n_flagged"]
    for key in ("confidence", "unfamiliar"):
        o = s["orderings"][key]
        full = o["table"][0]
        assert full["coverage"] == 1.0 and full["n_kept"] == 80
        assert full["accuracy"] == pytest.approx(r["accuracy"])
        assert full["sensitivity"] == pytest.approx(r["sensitivity"])
        assert [row["n_kept"] for row in o["table"]] == [80, 76, 72, 64]
        assert 0 <= o["aurc_oracle"] <= o["aurc"] <= 1 and len(o["curve"]["coverage"]) == 80


def test_an_evaluation_on_the_training_images_says_so_before_its_metrics(predictor, trained_run, chest_sample):
    """Issue 24: the run keeps its images' pixel digests (training_images.json), so evaluating it on the folder
    it was trained on counts the train and validation images as overlapping, and not its held-out test images."""
    import json

    from medclf_core.registry.store import TRAINING_IMAGES_FILE

    kept = json.loads((trained_run / TRAINING_IMAGES_FILE).read_text())["splits"]
    counts = predictor.card["dataset"]["counts"]
    assert {s: len(v) for s, v in kept.items()} == {s: sum(c.values()) for s, c in counts.items()}
    r = evaluate_folder(predictor, chest_sample, bootstrap=0)
    o = r["overlap"]
    assert list(r)[0] == "overlap" and o["basis"] == "image hashes" and o["n"] == 80
    assert o["n_overlapping"] == len(kept["train"]) + len(kept["val"]) and o["n_test"] == len(kept["test"]) > 0
    assert o["message"].startswith(f"{o['n_overlapping']} of the 80 evaluated images")
