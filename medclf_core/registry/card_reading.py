"""Readings of a model card that work on a plain dict as well as on a :class:`~medclf_core.registry.card.ModelCard`
(a prediction result, a card read by hand, a page's copy): the classes' plain words, what else the model calls a
finding, and whether its figures are cross-validated. :class:`~medclf_core.registry.card.ModelCard`'s own
properties use them, so there is one rule.

    >>> class_word(class_labels({"intended_use": {"class_labels": {"yes": "tumour"}}}), "yes")
    'tumour'
"""

from __future__ import annotations

from collections.abc import Mapping

from medclf_core.formatting import CROSS_VALIDATION


def class_labels(card: Mapping) -> dict[str, str]:
    """A card's plain words for its classes (``intended_use.class_labels``, e.g. ``{"yes": "tumour"}``), or {}.

    >>> class_labels({"intended_use": {"class_labels": {"yes": "tumour"}}}), class_labels({"intended_use": None})
    ({'yes': 'tumour'}, {})
    """
    use = card.get("intended_use")
    labels = use.get("class_labels") if isinstance(use, Mapping) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


def class_word(labels: Mapping | None, name) -> str:
    """``name`` in the plain words ``labels`` give it (:func:`class_labels`), else the name itself: what every view
    a clinician reads (headline, table, bars, PDF, the reading guide) calls a class.

    >>> class_word({"yes": "tumour"}, "yes"), class_word(None, "PNEUMONIA")
    ('tumour', 'PNEUMONIA')
    """
    return str((labels or {}).get(name, name))


def is_cross_validated(card: Mapping) -> bool:
    """Whether a card's same-source figures are out-of-fold predictions of every image (a small-data run), not a
    test split's."""
    return (card.get("metrics") or {}).get("split") == CROSS_VALIDATION


def finding_mimics(card: Mapping) -> str | None:
    """What else the model is known to call a finding (``intended_use.finding_mimics``, a sentence the card's author
    measured), shown under every finding so that a clinician reads it where it matters; None when the card says
    nothing.

    >>> finding_mimics({"intended_use": {"finding_mimics": "It also calls a stroke tumour."}})
    'It also calls a stroke tumour.'
    """
    use = card.get("intended_use")
    text = use.get("finding_mimics") if isinstance(use, Mapping) else None
    return text.strip() if isinstance(text, str) and text.strip() else None
