"""medclf_core.registry.card: one validated model-card type, its figures with n, the positive-class rule."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO

from medclf_core.registry.card import (CARD_KEYS, CARD_SCHEMA_VERSION, DEFAULTS, CardError, ModelCard, parse_card_text,
                                       positive_class_index)
from medclf_core.errors import ModelError

MODELS = REPO / "models"
BUNDLED = ("brain-mri-tumour", "chest-xray-pneumonia", "imaging-modality")
MINIMAL = {"name": "r", "class_names": ["a", "b"], "created": "2026-01-01"}


SCHEMA_1 = REPO / "tests" / "fixtures" / "schema1_cards"  # the bundled models' cards before schema 2


def _raw(name: str) -> dict:
    return json.loads((SCHEMA_1 / f"{name}.json").read_text())


def test_bundled_cards_are_schema_2_and_read():
    for name in BUNDLED:
        card = ModelCard.from_dict(json.loads((MODELS / name / "card.json").read_text()))
        assert card.schema_version == CARD_SCHEMA_VERSION and card.name == name and card.intended_use


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_schema_1_cards_read_with_defaults(name):
    raw = _raw(name)
    assert "schema_version" not in raw  # the older schema, read leniently
    card = ModelCard.from_dict(raw)
    assert isinstance(card, dict) and card.schema_version == 1
    assert set(DEFAULTS) | set(CARD_KEYS) <= set(card)  # every known key is there: no .get() needed
    assert card.name == name and card.class_names == raw["class_names"]
    assert card.tta == raw.get("tta", []) and card.ensemble == raw.get("ensemble")
    assert card.intended_use is None and card.calibration is None and card.bundled is False
    assert card.is_bundled and not card.is_toy and card.test_n == raw["metrics"]["n"]
    assert card.image_size == raw["input_shape"][0] and card.channels == 1
    if raw["positive_class"]:
        assert card.class_names[card.positive_index] == raw["positive_class"]
    else:
        assert card.positive_index is None


def test_minimal_card_gets_documented_defaults():
    card = ModelCard.from_dict({"name": "r", "class_names": ["a", "b"]})
    for key, default in DEFAULTS.items():
        assert card[key] == default, key
    card = ModelCard.from_dict(MINIMAL)
    assert card.schema_version == 1 and card.is_toy and card.test_n is None and card.run_dir is None
    assert card.metric("auc") is None and card.ci("accuracy") is None
    # defaults are copies: changing one card's never changes another's
    card.tta.append("hflip")
    assert ModelCard.from_dict(MINIMAL).tta == [] and DEFAULTS["tta"] == []


def test_to_dict_writes_the_schema_version_and_keeps_unknown_keys():
    raw = {**_raw("chest-xray-pneumonia"), "someone_elses_key": {"x": [1, 2]}, "run_dir": "/somewhere"}
    before = json.dumps(raw, sort_keys=True)
    card = ModelCard.from_dict(raw)
    assert json.dumps(raw, sort_keys=True) == before  # the input is not changed
    out = card.to_dict()
    assert out["schema_version"] == CARD_SCHEMA_VERSION == 2
    assert out["someone_elses_key"] == {"x": [1, 2]} and card["someone_elses_key"] == {"x": [1, 2]}
    assert "run_dir" not in out and card.run_dir == "/somewhere"
    again = ModelCard.from_dict(json.loads(json.dumps(out)))
    assert again.schema_version == 2 and again.to_dict() == out
    assert json.loads(json.dumps(card))["name"] == "chest-xray-pneumonia"  # a dict: serialisable as it is


def test_schema_2_fields_are_read():
    d = {**MINIMAL, "schema_version": 2, "bundled": True, "threshold": 1,
         "intended_use": {"summary": "Adult frontal chest films", "modalities": ["CR", "DX"], "body_parts": ["CHEST"],
                          "population": "adults", "not_for": ["children", "lateral films"]},
         "training_data": "3,600 films from one hospital", "calibration": {"method": "temperature", "temperature": 1.7},
         "ood": {"method": "mahalanobis", "threshold": 12.5}, "pretrained": "ImageNet (Keras applications)"}
    card = ModelCard.from_dict(d)
    assert card.intended_use["modalities"] == ["CR", "DX"] and card.training_data.startswith("3,600")
    assert card.calibration["temperature"] == 1.7 and card.ood["threshold"] == 12.5
    assert card.pretrained.startswith("ImageNet") and card.is_bundled
    assert card.threshold == 1.0 and isinstance(card.threshold, float)


@pytest.mark.parametrize("patch,fragment", [
    ({"created": 12345}, "'created' must be an ISO date"),
    ({"created": "yesterday"}, "'created' must be an ISO date"),
    ({"name": None}, "'name' must be a text"),
    ({"name": "../etc"}, "not a valid run name"),
    ({"class_names": [0, 1]}, "'class_names' must be a list of at least 2"),
    ({"class_names": ["only"]}, "'class_names' must be a list of at least 2"),
    ({"class_names": "ab"}, "'class_names' must be a list"),
    ({"class_names": ["a", "a"]}, "must not repeat"),
    ({"threshold": "0.5"}, "'threshold' must be a number between 0 and 1 or null (found the text '0.5')"),
    ({"threshold": 1.5}, "'threshold' must be a number between 0 and 1"),
    ({"threshold": True}, "'threshold' must be a number"),
    ({"threshold": float("nan")}, "'threshold' must be a number"),
    ({"positive_class": "c"}, "'positive_class' must be one of"),
    ({"input_shape": [64, 32, 1]}, "'input_shape' must be [size, size, 1 or 3]"),
    ({"input_shape": [64, 64, 4]}, "'input_shape'"),
    ({"input_shape": "64"}, "'input_shape'"),
    ({"tta": "hflip"}, "'tta' must be a list"),
    ({"metrics": []}, "'metrics' must be an object"),
    ({"metrics": {"n": "12"}}, "'metrics.n' must be a whole number"),
    ({"metrics": {"accuracy": "high"}}, "'metrics.accuracy' must be a number"),
    ({"metrics": {"ci95": {"accuracy": [0.5]}}}, "'metrics.ci95.accuracy'"),
    ({"config": None}, "'config' must be an object"),
    ({"dataset": {"counts": {"test": {"a": -1}}}}, "'dataset.counts'"),
    ({"ensemble": {"members": 1}}, "'ensemble.members'"),
    ({"bundled": "yes"}, "'bundled' must be true or false"),
    ({"schema_version": 99}, "newer than this medclf reads"),
    ({"schema_version": "2"}, "'schema_version' must be a whole number"),
    ({"intended_use": "chest"}, "'intended_use' must be an object"),
    ({"intended_use": {"modalities": "CR"}}, "'intended_use.modalities' must be a list"),
    ({"intended_use": {"modalities": ["<img src=x>"]}}, "DICOM Modality codes"),
    ({"intended_use": {"class_labels": {"PNEUMONIA": 3}}}, "'intended_use.class_labels'"),
    ({"intended_use": {"class_labels": {"PNEUMONIA": ""}}}, "'intended_use.class_labels'"),
    ({"intended_use": {"class_labels": ["pneumonia"]}}, "'intended_use.class_labels'"),
    ({"training_data": 3}, "'training_data' must be a text"),
    ({"calibration": {"temperature": -1}}, "'calibration.temperature'"),
    ({"ood": [1]}, "'ood' must be an object"),
    ({"pretrained": 1}, "'pretrained' must be a text or an object"),
])
def test_invalid_fields_are_refused_with_a_plain_reason(patch, fragment):
    with pytest.raises(CardError) as info:
        ModelCard.from_dict({**_raw("chest-xray-pneumonia"), **patch})
    assert isinstance(info.value, ModelError)  # shown as a message, never as a traceback
    assert fragment in str(info.value) and fragment in info.value.reason
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("d,fragment", [
    ([], "it must be a JSON object, not a list"),
    ("card", "it must be a JSON object"),
    (None, "it must be a JSON object, not null"),
    ({"class_names": ["a", "b"]}, "it has no 'name'"),
    ({"name": "r"}, "it has no 'class_names'"),
])
def test_a_card_that_is_not_a_card_is_refused(d, fragment):
    with pytest.raises(CardError, match=fragment):
        ModelCard.from_dict(d)


def test_card_text_that_is_not_json_is_refused():
    with pytest.raises(CardError, match="not valid JSON") as info:
        parse_card_text('{"name": "r",', source="of run 'r'")
    assert "of run 'r'" in str(info.value) and info.value.reason.startswith("not valid JSON")
    with pytest.raises(CardError, match="not valid JSON"):
        parse_card_text(b"\xff\xfe{}")
    with pytest.raises(CardError, match="nested too deeply|not valid JSON"):
        parse_card_text("[" * 100_000)
    assert parse_card_text(json.dumps(MINIMAL)).name == "r"


def test_importing_the_card_module_does_not_import_tensorflow():
    code = "import sys, medclf_core.registry.card, medclf_core.registry.store; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_card_format_metric_uses_its_own_n_and_interval():
    card = ModelCard.from_dict(_raw("brain-mri-tumour"))
    assert card.format_metric("accuracy") == "0.853 (95% CI 0.735-0.971, n = 34)"
    assert card.format_metric("sensitivity") == "0.905 (n = 21, too few images for a reliable figure)"  # 21 positives
    toy = ModelCard.from_dict({**MINIMAL, "metrics": {"n": 12, "accuracy": 1.0, "ci95": {"accuracy": [1.0, 1.0]}}})
    assert toy.is_toy and toy.format_metric("accuracy") == "1.000 (n = 12, too few images for a reliable figure)"


def test_card_keys_are_what_every_trained_and_bundled_card_carries():
    assert {"name", "class_names", "threshold", "created", "metrics"} <= set(CARD_KEYS)
    for card in MODELS.glob("*/card.json"):
        assert set(CARD_KEYS) <= set(json.loads(card.read_text())), card


# ---------------------------------------------------------------------------- the positive class

@pytest.mark.parametrize("names,positive,expected", [
    (["NORMAL", "PNEUMONIA"], None, 1), (["no", "yes"], None, 1), (["tumour", "normal"], None, 0),
    (["cat", "dog"], None, 1), (["a", "b", "c"], None, None),
    (["NORMAL", "PNEUMONIA"], "NORMAL", 0),       # the card's choice wins over the names
    (["a", "b", "c"], "c", 2),                    # named: any number of classes
    (["NORMAL", "PNEUMONIA"], "OTHER", 1),        # a name the model does not have: as if none
])
def test_positive_class_index_is_the_cards_choice_else_the_finding_by_name(names, positive, expected):
    assert positive_class_index(names, positive) == expected


def test_card_positive_index_follows_the_one_rule():
    named = ModelCard.from_dict({**MINIMAL, "class_names": ["PNEUMONIA", "NORMAL"], "positive_class": "PNEUMONIA"})
    unnamed = ModelCard.from_dict({**MINIMAL, "class_names": ["PNEUMONIA", "NORMAL"]})
    multi = ModelCard.from_dict({**MINIMAL, "class_names": ["CT", "MRI", "XRAY"]})
    assert (named.positive_index, unnamed.positive_index, multi.positive_index) == (0, 0, None)


def test_a_card_without_a_positive_class_says_so_in_words():
    """Walk-through: the modality model's card read "Positive class: None"."""
    multi = ModelCard.from_dict({**MINIMAL, "class_names": ["CT", "MRI", "XRAY"]})
    assert multi.positive_class_text == "none (multi-class: the top class is the decision)"
    unnamed = ModelCard.from_dict({**MINIMAL, "class_names": ["NORMAL", "PNEUMONIA"]})
    assert unnamed.positive_class_text == "PNEUMONIA"  # the one rule's choice, as everywhere else


def test_sensitivity_and_specificity_give_the_n_of_their_own_class():
    """Walk-through: the PDF printed "Sensitivity (test split) 0.958 (n = 779)" where 578 positives stand behind
    it; a cross-validated run's counts are every split's together, and counts that do not add up give no n."""
    from medclf_core.formatting import CROSS_VALIDATION

    counts = {"train": {"NORMAL": 20, "PNEUMONIA": 30}, "test": {"NORMAL": 6, "PNEUMONIA": 24}}
    base = {"name": "m", "class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA",
            "dataset": {"counts": counts}}
    card = ModelCard.from_dict({**base, "metrics": {"split": "test", "n": 30, "sensitivity": 0.9, "specificity": 1.0}})
    assert card.format_metric("sensitivity") == "0.900 (n = 24, too few images for a reliable figure)"
    assert card.metric_n("specificity") == 6 and card.metric_n("accuracy") == 30
    cv = ModelCard.from_dict({**base, "metrics": {"split": CROSS_VALIDATION, "n": 80}})
    assert (cv.metric_n("sensitivity"), cv.metric_n("specificity")) == (54, 26)
    odd = ModelCard.from_dict({**base, "metrics": {"split": "test", "n": 29}})
    assert odd.metric_n("sensitivity") is None and odd.metric_n("auc") == 29
    multi = ModelCard.from_dict({"name": "m", "class_names": ["CT", "MRI", "XRAY"], "metrics": {"n": 9}})
    assert multi.metric_n("sensitivity") == 9
