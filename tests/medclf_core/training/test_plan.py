"""The plan the Train page shows before training: which recipe a dataset of this size gets, by the trainer's rule."""

from __future__ import annotations

import json

import pytest

from medclf_core.models.architectures import list_architectures
from medclf_core.training import TrainConfig, train
from medclf_core.training.crossfit import SMALL_DATA_IMAGES
from medclf_core.training.plan import dataset_plan, takes_cross_fit


def _audit(n_per_class: int, presplit: bool = False, duplicates=()) -> dict:
    counts = ({"train": {"a": n_per_class - 2, "b": n_per_class - 2}, "test": {"a": 2, "b": 2}} if presplit
              else {"all": {"a": n_per_class, "b": n_per_class}})
    return {"n_images": 2 * n_per_class, "presplit": presplit, "counts": counts,
            "duplicate_groups": [list(g) for g in duplicates], "near_duplicate_groups": []}


def test_the_bundled_samples_size_is_planned_as_a_cross_validated_head():
    """Walk-through: the audit said 'medclf splits 70/15/15' for 80 images the run cross-validated, and never said
    that the Epochs setting would have no effect."""
    text = dataset_plan(_audit(40), list_architectures())
    assert text.startswith(f"80 images, fewer than {SMALL_DATA_IMAGES}: with efficientnet_lite0")
    assert "fitted on all 80 images" in text and "5-fold cross-validation" in text
    assert "Epochs, Learning rate and Early-stopping patience settings do not apply" in text
    # the held-out split only for what the rule sends there: resnet50 (a hidden head layer), scratch, fine-tuning
    assert "resnet50" not in text.split(":")[1] and "simple_cnn" not in text.split(":")[1]
    assert text.endswith("With another architecture or fine-tuning epochs: medclf splits them 70/15/15, stratified.")


def test_enough_images_are_planned_as_the_held_out_split_and_the_settings_follow_the_config():
    assert dataset_plan(_audit(250), list_architectures()) == "500 images: medclf splits them 70/15/15, stratified."
    assert dataset_plan(_audit(40), ["simple_cnn", "resnet50"]) == "80 images: medclf splits them 70/15/15, stratified."
    cfg = TrainConfig(data="", fine_tune_epochs=0, small_data_images=50, val_split=0.2, test_split=0.1)
    assert dataset_plan(_audit(40), ["efficientnet_lite0"], cfg) == "80 images: medclf splits them 70/20/10, stratified."
    presplit = dataset_plan(_audit(40, presplit=True), ["efficientnet_lite0"])
    assert "fitted on all 80 images" in presplit and presplit.endswith("the dataset's own train, val and test "
                                                                        "folders are used.")


def test_the_folds_follow_the_smallest_class_and_the_duplicate_groups():
    assert "3-fold cross-validation" in dataset_plan({**_audit(40), "counts": {"all": {"a": 77, "b": 3}}},
                                                     ["efficientnet_lite0"])
    assert "too few images of a class" in dataset_plan({**_audit(40), "counts": {"all": {"a": 79, "b": 1}}},
                                                       ["efficientnet_lite0"])


@pytest.mark.parametrize("changes, expected", [
    ({}, True), ({"fine_tune_epochs": 2}, False), ({"small_data_images": 80}, False), ({"small_data_images": 81}, True),
    ({"weights": "none"}, False), ({"recipe": "scratch"}, False), ({"model_options": {"dense_units": 16}}, False),
    ({"arch": "resnet50"}, False), ({"arch": "simple_cnn"}, False), ({"arch": "efficientnet_lite2"}, True)])
def test_takes_cross_fit_is_the_trainers_rule(changes, expected):
    cfg = TrainConfig(**{"data": "", "arch": "efficientnet_lite0", "fine_tune_epochs": 0, **changes})
    assert takes_cross_fit(cfg, 80) is expected


def test_the_plan_is_what_the_trainer_does(chest_sample, tmp_path):
    """One source of truth: the plan and the run agree on the 80-image sample, both ways."""
    for small, cross_validated in ((SMALL_DATA_IMAGES, True), (0, False)):
        cfg = TrainConfig(data=str(chest_sample), arch="efficientnet_lite0", image_size=64, epochs=2,
                          feature_views=1, small_data_images=small, name=f"plan-{small}")
        assert takes_cross_fit(cfg, 80) is cross_validated
        card = json.loads((train(cfg, models_dir=tmp_path / "models") / "card.json").read_text())
        assert (card["recipe"]["cross_validated_head"] is not None) is cross_validated
        if cross_validated:
            assert f"{card['recipe']['cross_validated_head']['folds']}-fold" in dataset_plan(
                _audit(40), ["efficientnet_lite0"], cfg)
