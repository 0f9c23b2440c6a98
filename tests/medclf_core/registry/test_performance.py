"""medclf_core.registry.performance: same-source and other-source figures side by side, each with its n."""

from __future__ import annotations

from medclf_core.registry.card import ModelCard
from medclf_core.registry.evaluations import record_evaluation
from medclf_core.registry.performance import PERFORMANCE_METRICS, performance_rows

CARD = {"name": "m", "class_names": ["NORMAL", "PNEUMONIA"], "dataset": {"name": "chest"},
        "metrics": {"n": 120, "accuracy": 0.9, "auc": 0.95, "ci95": {"accuracy": [0.85, 0.95]}}}


def test_own_split_first_then_each_recorded_evaluation(tmp_path):
    card = ModelCard.from_dict({**CARD, "run_dir": str(tmp_path)})
    record_evaluation(tmp_path, {"n": 12, "accuracy": 0.75, "ci95": {"accuracy": [0.5, 0.9]}},
                      dataset="hospital-b", fingerprint="ab" * 32)
    own, other = performance_rows(card)
    assert own["data"] == "own test split (chest, same source)" and own["n"] == 120
    assert own["accuracy"] == "0.900 (95% CI 0.850-0.950, n = 120)" and own["AUC"] == "0.950 (n = 120)"
    assert own["ECE"] == "n/a"
    assert other["data"].startswith("hospital-b (other data, 20") and other["n"] == 12
    assert other["accuracy"] == "0.750 (n = 12, too few images for a reliable figure)"
    assert set(own) == set(other) == {"data", "n", *(label for label, _ in PERFORMANCE_METRICS)}


def test_given_evaluations_are_used_and_a_card_without_a_folder_has_one_row():
    card = ModelCard.from_dict(CARD)
    assert len(performance_rows(card)) == 1
    rows = performance_rows(card, [{"dataset": "d", "date": "2026-02-03T00:00:00+00:00", "n": 40,
                                    "metrics": {"auc": 0.8}, "ci95": {}}])
    assert rows[1]["data"] == "d (other data, 2026-02-03)" and rows[1]["AUC"] == "0.800 (n = 40)"


def test_a_cross_validated_run_is_not_called_a_test_split():
    """Walk-through: a small-data run's out-of-fold figures were listed as its 'own test split'."""
    cv = ModelCard.from_dict({**CARD, "metrics": {**CARD["metrics"], "split": "cross-validation (out-of-fold)"}})
    assert performance_rows(cv, [])[0]["data"] == "own cross-validation (chest, same source)"


def test_an_evaluations_sensitivity_and_specificity_give_their_own_class_n(tmp_path):
    """Walk-through, round three: the brain card's held-out row read "sensitivity 0.913 (n = 87)" and
    "specificity 0.951 (n = 87)": 46 tumour and 41 no-tumour images stand behind them."""
    card = ModelCard.from_dict({**CARD, "run_dir": str(tmp_path), "positive_class": "PNEUMONIA"})
    record_evaluation(tmp_path, {"n": 87, "sensitivity": 0.913, "specificity": 0.951, "accuracy": 0.931,
                                 "class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA",
                                 "confusion_matrix": [[39, 2], [4, 42]]}, dataset="held-out", fingerprint="cd" * 32)
    other = performance_rows(card)[1]
    assert other["sensitivity"] == "0.913 (n = 46)" and other["specificity"] == "0.951 (n = 41)"
    assert other["accuracy"] == "0.931 (n = 87)"
    old = performance_rows(card, [{"dataset": "d", "n": 87, "positive_class": "PNEUMONIA",
                                   "metrics": {"sensitivity": 0.913}}])[1]  # recorded before the counts were
    assert old["sensitivity"] == "0.913"


def test_an_evaluation_that_resampled_patients_says_how_many():
    """Intervals from `evaluate --group-pattern` resample patients or cases: the row says how many there were."""
    card = ModelCard.from_dict(CARD)
    record = {"dataset": "medpix", "date": "2026-12-07T00:00:00+00:00", "n": 256, "n_groups": 67,
              "metrics": {"accuracy": 0.52}, "ci95": {"accuracy": [0.40, 0.64]}}
    rows = performance_rows(card, [record, {**record, "n_groups": "67; drop"}])
    assert rows[1]["data"] == "medpix (other data, 2026-12-07, 67 patients or cases)"
    assert rows[2]["data"] == "medpix (other data, 2026-12-07)"  # a damaged count is left out, not quoted


def test_the_own_split_says_how_many_patients_its_intervals_resampled():
    card = ModelCard.from_dict({**CARD, "metrics": {**CARD["metrics"], "n_groups": 61}})
    assert performance_rows(card, [])[0]["data"] == "own test split (chest, same source, 61 patients or groups)"
