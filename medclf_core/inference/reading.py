"""How to read a result, in the words the Predict page shows beside it: the decision and its borderline margin,
refusals and cautions, the heat map, and its faithfulness score. Kept beside the constants they quote
(:data:`~medclf_core.inference.results.BORDERLINE_MARGIN`), so a changed margin changes the words too.

    >>> "5 percentage points" in reading_guide({"threshold": 0.77, "positive_class": "PNEUMONIA"})
    True
"""

from collections.abc import Callable, Mapping

from medclf_core.explain.faithfulness import WORSE_THAN_RANDOM
from medclf_core.inference.results import BORDERLINE_MARGIN
from medclf_core.registry.card_reading import class_labels, class_word

FAITHFULNESS_HELP = ("How much the model relies on the highlighted regions: the most highlighted regions of the "
                     "image are blanked (set to the image's mean grey) 10% at a time and the model re-run; the "
                     "faster this class's log-odds (its evidence: they fall even at 100%) fall compared with random "
                     "regions, the higher the score. 1: they fall at once; 0: no better than random regions (the map "
                     f"does not show what the model used); {WORSE_THAN_RANDOM:g} or below: worse than random (the "
                     "map points away from what the model used). 'n/a': the blank image reads as this class, so "
                     "blanking cannot test the map.")
_REFUSED_OR_CAUTION = (
    "##### Refused, or shown with a caution\n"
    "*Not an image this model knows*: refused (another kind of image, body part or population); what the model "
    "output anyway is not a finding. *Unlike this model's training images*: the finding is shown with a caution; "
    "expect lower accuracy than on the model card.")


def reading_guide(card: Mapping, escape: Callable[[str], str] = str) -> str:
    """How to read this model's headline (Markdown): a model with an operating threshold decides at it and shows
    P(its finding class), in the card's plain words; a model without one (the modality model) shows the most
    probable class, borderline by the gap to the next one (:func:`~medclf_core.inference.results.headline`'s
    rules). ``escape`` is applied to the class's words, which come from the card (a data folder's name): the page
    passes its Markdown escape, so a class named like a link or an image never makes the browser fetch it.

    >>> "P(tumour)" in reading_guide({"threshold": 0.75, "positive_class": "yes",
    ...                               "intended_use": {"class_labels": {"yes": "tumour"}}})
    True
    >>> "two most probable classes" in reading_guide({"class_names": ["CT", "MRI", "XRAY"]})
    True
    """
    pos = card.get("positive_class")
    if card.get("threshold") is not None and pos is not None:
        decision = (
            "The headline is the model's decision at its operating threshold, with the probability of the finding "
            f"class, P({escape(class_word(class_labels(card), pos))}), whichever class was decided. *Borderline*: "
            f"that probability is less than {BORDERLINE_MARGIN * 100:g} percentage points from the threshold, so a "
            "small change in the image could change the decision.")
    else:
        decision = (
            "The headline is the most probable class, with its probability (this model has no operating threshold). "
            f"*Borderline*: the two most probable classes are less than {2 * BORDERLINE_MARGIN * 100:g} percentage "
            "points apart, so a small change in the image could change the decision.")
    return f"##### The decision\n{decision} Probabilities are shown capped at >99% and <1%.\n{_REFUSED_OR_CAUTION}"
HEATMAP_GUIDE = (
    "##### The heat map\n"
    "Where the image raised the score of the chosen class; not an outline of a lesion. The method and opacity "
    "below apply to images opened from now on; each image's own controls change its map.")
