"""medclf_core.trust.population: PatientAge against the card's age range, and the modality router's refuse rule."""

from __future__ import annotations

import pytest

from medclf_core.io.dicom_header import parse_patient_age, shown_patient_age
from medclf_core.trust.population import ROUTER_MIN_CONFIDENCE, age_range, age_reason, body_part_reason, router_reason

CHILDREN = {"age_years": [1, 5]}


@pytest.mark.parametrize("value, years", [("045Y", 45.0), ("006M", 0.5), ("003W", 0.06), ("010D", 0.03),
                                          ("7", 7.0), (" 012y ", 12.0), ("", None), ("45 years", None),
                                          ("-01Y", None), ("000Y", None), (None, None), ("1234Y", None)])
def test_parse_patient_age(value, years):
    assert parse_patient_age(value) == years


def test_high_ages_are_capped_for_what_a_result_carries():
    assert shown_patient_age("095Y") == "090Y" and shown_patient_age("045y") == "045Y"
    assert shown_patient_age("unknown") is None


def test_age_reason_in_plain_words():
    assert age_reason(CHILDREN, {"PatientAge": "045Y"}) == \
        "adult patient (45 years), but this model was trained on children aged 1-5"
    assert age_reason(CHILDREN, {"PatientAge": "003Y"}) is None          # inside the range
    assert age_reason(CHILDREN, {"PatientAge": "012Y"}) == \
        "patient aged 12 years, but this model was trained on patients aged 1-5 years"
    assert age_reason(CHILDREN, {"PatientAge": "006M"}).startswith("patient aged 6 months")
    assert age_reason({"age_years": [18, 90]}, {"PatientAge": "004Y"}) == \
        "child (4 years), but this model was trained on adults aged 18-90"
    # nothing declared, nothing in the header, or a header that is not an age: never refuses
    assert age_reason({}, {"PatientAge": "045Y"}) is None
    assert age_reason(CHILDREN, {"Modality": "CR"}) is None and age_reason(CHILDREN, None) is None
    assert age_reason(CHILDREN, {"PatientAge": "old"}) is None
    assert age_range({"age_years": [5, 1]}) is None and age_range({"age_years": "1-5"}) is None


def test_router_rule_refuses_only_a_confident_other_modality():
    mr = {"modalities": ["MR"]}
    assert router_reason(mr, {"CT": 0.95, "MRI": 0.04, "XRAY": 0.01}) == \
        "the imaging-modality model calls it CT (P(CT) = 95.0%); this model is for MR"
    # walk-through: "(P = 1.00)": every probability shown to a person is capped by the one formatter
    assert "calls it CT (P(CT) > 99%)" in router_reason(mr, {"CT": 0.9996, "MRI": 0.0004, "XRAY": 0.0})
    assert router_reason(mr, {"CT": ROUTER_MIN_CONFIDENCE, "MRI": 0.1, "XRAY": 0.0}) is not None  # >= is refused
    assert router_reason(mr, {"CT": 0.89, "MRI": 0.1, "XRAY": 0.01}) is None    # not confident enough
    assert router_reason(mr, {"CT": 0.01, "MRI": 0.98, "XRAY": 0.01}) is None   # its own modality
    chest = {"modalities": ["CR", "DX"]}
    assert "calls it MRI" in router_reason(chest, {"CT": 0.0, "MRI": 0.99, "XRAY": 0.01})
    assert router_reason(chest, {"CT": 0.0, "MRI": 0.01, "XRAY": 0.99}) is None
    assert router_reason({"modalities": ["XRAY"]}, {"CT": 0.0, "MRI": 0.01, "XRAY": 0.99}) is None  # card word
    # a card with no modality the router knows (ultrasound), no card entry, or no router output: no verdict
    assert router_reason({"modalities": ["US"]}, {"CT": 0.99, "MRI": 0.0, "XRAY": 0.01}) is None
    assert router_reason(None, {"CT": 0.99}) is None and router_reason(mr, None) is None
    assert router_reason(mr, {"CT": 0.95, "MRI": 0.05}, min_confidence=0.99) is None


def test_the_body_part_rule_refuses_only_a_model_for_the_head_and_only_below_the_cut():
    head_model = {"modalities": ["MR"], "body_parts": ["HEAD", "BRAIN"]}
    reason = body_part_reason(head_model, {"MRI": 0.98, "HEAD": 0.02})
    assert reason == ("the body-part check calls it another body part than the head (P(head) = 2.0%); this model is "
                      "for BRAIN or HEAD")
    assert "(P(head) < 1%)" in body_part_reason(head_model, {"MRI": 0.98, "HEAD": 0.004})
    assert body_part_reason(head_model, {"MRI": 0.98, "HEAD": 0.1}) is None           # at the cut: kept
    assert body_part_reason(head_model, {"MRI": 0.98}) is None                         # no probe: no check
    assert body_part_reason({"body_parts": ["CHEST"]}, {"HEAD": 0.0}) is None          # a chest model: not this check
    assert body_part_reason({"body_parts": ["HEAD", "NECK"]}, {"HEAD": 0.0}) is None   # not the head only
    assert body_part_reason({"modalities": ["MR"]}, {"HEAD": 0.0}) is None             # no body part declared


def test_the_modality_rule_reads_the_modalities_and_not_the_probes_head():
    assert router_reason({"modalities": ["MR"]}, {"CT": 0.95, "MRI": 0.04, "XRAY": 0.01, "HEAD": 0.99}) == \
        "the imaging-modality model calls it CT (P(CT) = 95.0%); this model is for MR"
    assert router_reason({"modalities": ["MR"]}, {"MRI": 0.5, "CT": 0.5, "HEAD": 0.99}) is None
    assert router_reason({"modalities": ["MR"]}, {"HEAD": 0.99}) is None
