"""medclf_core.registry.card_reading: one rule for a class's plain words and for cross-validated figures, whether
the card is a ModelCard, a plain dict or a prediction result's copy."""

from __future__ import annotations

import pytest

from medclf_core.inference.reading import reading_guide
from medclf_core.inference.results import class_word as result_class_word
from medclf_core.registry.card import ModelCard
from medclf_core.registry.card_reading import class_labels, class_word, finding_mimics, is_cross_validated
from medclf_core.reports.plots import probability_bars

BRAIN = {"name": "b", "class_names": ["no", "yes"], "positive_class": "yes", "threshold": 0.75,
         "intended_use": {"class_labels": {"no": "no tumour", "yes": "tumour"}}}


@pytest.mark.parametrize("use", [None, "text", {"class_labels": None}, {"class_labels": ["tumour"]}, {}])
def test_a_card_without_usable_words_keeps_its_class_names(use):
    assert class_labels({"intended_use": use}) == {}
    assert class_word(class_labels({"intended_use": use}), "yes") == "yes"


def test_every_reader_gives_the_same_words():
    card = ModelCard.from_dict(BRAIN)
    words = class_labels(BRAIN)
    assert card.class_word("yes") == class_word(words, "yes") == result_class_word({"class_labels": words}, "yes")
    assert "P(tumour)" in reading_guide(BRAIN)
    bars = probability_bars({"no": 0.3, "yes": 0.7}, class_labels=words)
    assert "tumour" in {str(t) for trace in bars.data for t in (trace.y if trace.y is not None else [])}


def test_cross_validated_is_read_the_same_from_a_dict_and_a_card():
    cv = {**BRAIN, "metrics": {"split": "cross-validation (out-of-fold)", "n": 80}}
    assert is_cross_validated(cv) and ModelCard.from_dict(cv).is_cross_validated
    assert not is_cross_validated(BRAIN) and not is_cross_validated({"metrics": None})


def test_known_mimics_are_a_sentence_on_the_card_or_nothing():
    from medclf_core.registry.card import CardError

    said = {**BRAIN, "intended_use": {"finding_mimics": "  it also calls a stroke tumour.  "}}
    assert finding_mimics(said) == "it also calls a stroke tumour." and finding_mimics(ModelCard.from_dict(said))
    assert finding_mimics(BRAIN) is None and finding_mimics({"intended_use": {"finding_mimics": " "}}) is None
    with pytest.raises(CardError, match="finding_mimics"):
        ModelCard.from_dict({**BRAIN, "schema_version": 2, "intended_use": {"finding_mimics": ["a list"]}})
