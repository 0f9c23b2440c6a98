"""What the :class:`~medclf_core.inference.predictor.Predictor` hands a caller: results ready to show.

- :class:`Prediction`: one image's decision, probabilities and out-of-distribution verdict. A plain
  dict underneath (the CSV export, the PDF report and ``--json`` read it as such), with the
  verdict's words as a property.
- :class:`HeatMap`: one heat map with what it explains, the overlay at any opacity (re-rendered
  from the map, never recomputed) and its faithfulness score in words.
- :func:`headline`: what a clinician reads first (the decision, P(positive class), "borderline"),
  the one rule the Predict page, the CLI and the PDF report all show; :func:`exported` is a result as
  the JSON/CSV exports give it (no ``label`` for a refused image).
- :func:`result_key`: the one rule for what invalidates a result, for a caller that keeps
  results between runs (the Predict page's per-session cache).

Example::

    >>> heat = np.zeros((4, 6), np.float32)
    >>> hm = HeatMap(heatmap=heat, image=np.full((4, 6), 128, np.uint8), method="gradcam", class_index=1,
    ...              class_name="PNEUMONIA", faithfulness=0.42)
    >>> hm.overlay(0.0).shape, int(hm.overlay(0.0)[0, 0, 0])     # opacity 0: the image itself
    ((4, 6, 3), 128)
    >>> hm.faithfulness_caption
    'Faithfulness 0.42 (the model relies on the highlighted regions).'
    >>> Prediction({"label": "NORMAL", "ood": True, "ood_reason": "modality MR"}).verdict_words is not None
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medclf_core.explain.faithfulness import faithfulness_verdict, format_faithfulness
from medclf_core.explain.render import DISPLAY_SIDE, OVERLAY_OPACITY, colour_scale, fit_for_display, overlay
from medclf_core.formatting import percent, probability_of, probability_text
from medclf_core.registry.card_reading import class_word as card_class_word
from medclf_core.trust.calibration import temperature_of
from medclf_core.trust.ood import score_caption
from medclf_core.trust.verdict import ood_message, refusal_heading


class Prediction(dict):
    """One image's result: ``label``, ``probabilities``, the OOD fields (``ood``: True flagged, False
    in distribution, None not checked) and how they were made (``threshold``, ``positive_class``,
    ``temperature``, ``tta``, ``ensemble`` when they apply); see
    :meth:`~medclf_core.inference.predictor.Predictor.describe`."""

    @property
    def label(self) -> str:
        return self["label"]

    @property
    def flagged(self) -> bool:
        """True when the image does not look like the model's training images: its output is not a finding."""
        return self.get("ood") is True

    @property
    def headline(self) -> Headline:
        """What a clinician reads first (:func:`headline`)."""
        return headline(self)

    @property
    def verdict_words(self) -> str | None:
        """The plain warning for a flagged image (:func:`medclf_core.trust.verdict.ood_message`), else None."""
        return ood_message(self)

    @property
    def refusal_heading(self) -> str:
        """What a refused image's heading says after its name (:func:`medclf_core.trust.verdict.refusal_heading`)."""
        return refusal_heading(self)


BORDERLINE_MARGIN = 0.05  # |P(positive) - threshold| below this (absolute) marks a decision "borderline"


@dataclass(frozen=True)
class Headline:
    """The headline of one result (:func:`headline`): the decision, the probability shown with it, and
    whether the case is borderline. ``shown_class``: whose probability ``probability`` is (the positive
    class for a thresholded binary model, else the decided class); ``threshold``: None for an argmax model."""

    decision: str
    shown_class: str
    probability: float
    threshold: float | None
    borderline: bool
    finding: bool  # the decision is the positive class (a binary model's finding); False otherwise
    site: str | None = None  # the site whose calibration's threshold decided (result "calibration": "site:NAME")

    @property
    def probability_text(self) -> str:
        """``P(PNEUMONIA) = 62.0%``, or ``P(PNEUMONIA) > 99%`` (capped:
        :func:`medclf_core.formatting.probability_text`)."""
        return probability_of(self.shown_class, self.probability)

    @property
    def title(self) -> str:
        """One line: ``NORMAL (P(PNEUMONIA) = 62.0%, borderline)``."""
        return f"{self.decision} ({self.probability_text}" + (", borderline)" if self.borderline else ")")

    @property
    def sentence(self) -> str:
        """The decision with the rule behind it, and what borderline means when it is (plain text)."""
        if self.threshold is None:
            text = f"Decision: {self.decision}, the most probable class ({self.probability_text}; this model has " \
                   "no operating threshold)."
            why = f"the two most probable classes are less than {percent(2 * BORDERLINE_MARGIN, 0)} apart"
        else:
            side = "at or above" if self.probability >= self.threshold else "below"
            whose = f"the threshold of site '{self.site}'" if self.site else "the model's operating threshold"
            text = (f"Decision at {whose}: {self.decision} ({self.probability_text}, "
                    f"{side} the threshold {percent(self.threshold)}).")
            why = (f"P({self.shown_class}) is less than {percent(BORDERLINE_MARGIN, 0)} (absolute) from the "
                   "threshold")
        if self.borderline:
            text += f" Borderline: {why}; a small change in the image could change the decision."
        return text


def class_word(result: Mapping, name) -> str:
    """A class's plain words from the card's ``intended_use.class_labels`` (in the result as ``class_labels``),
    else its name (:func:`medclf_core.registry.card.class_word`).

    >>> class_word({"class_labels": {"yes": "tumour"}}, "yes"), class_word({}, "PNEUMONIA")
    ('tumour', 'PNEUMONIA')
    """
    return card_class_word(result.get("class_labels"), name)


def headline(result: Mapping) -> Headline:
    """The headline of a prediction result (a :class:`Prediction` or its dict).

    A binary model with an operating threshold (``threshold`` and ``positive_class`` in the result):
    the decision at the threshold and P(positive class), whichever class was decided; so "NORMAL" at
    P(PNEUMONIA) = 0.62 below a 0.75 threshold reads ``NORMAL (P(PNEUMONIA) = 62.0%)``, never
    ``NORMAL (38.0%)``. Borderline when ``|P(positive) - threshold| < BORDERLINE_MARGIN`` (0.05).
    Any other model: the decided class (the most probable) and its probability; borderline when the
    two most probable classes are less than ``2 * BORDERLINE_MARGIN`` apart (the same rule as a
    two-class model at threshold 0.5).

    >>> h = headline({"label": "NORMAL", "probabilities": {"NORMAL": 0.38, "PNEUMONIA": 0.62},
    ...               "threshold": 0.75, "positive_class": "PNEUMONIA"})
    >>> h.title, h.finding
    ('NORMAL (P(PNEUMONIA) = 62.0%)', False)
    >>> headline({"label": "MRI", "probabilities": {"CT": 0.001, "MRI": 0.998, "XRAY": 0.001}}).title
    'MRI (P(MRI) > 99%)'

    A card's ``intended_use.class_labels`` (in the result as ``class_labels``) give the classes' plain words:

    >>> headline({"label": "no", "probabilities": {"no": 0.976, "yes": 0.024}, "threshold": 0.75,
    ...           "positive_class": "yes", "class_labels": {"no": "no tumour", "yes": "tumour"}}).title
    'no tumour (P(tumour) = 2.4%)'
    """
    probs = {str(k): float(v) for k, v in (result.get("probabilities") or {}).items()}
    decision = str(result.get("label"))
    pos, threshold = result.get("positive_class"), result.get("threshold")
    if threshold is not None and pos in probs:
        p = probs[pos]
        cal = str(result.get("calibration") or "")
        return Headline(class_word(result, decision), class_word(result, pos), p, float(threshold),
                        abs(p - float(threshold)) < BORDERLINE_MARGIN, decision == pos,
                        cal.removeprefix("site:") if cal.startswith("site:") else None)
    ranked = sorted(probs.values(), reverse=True)
    lead = ranked[0] - ranked[1] if len(ranked) > 1 else 1.0
    return Headline(class_word(result, decision), class_word(result, decision), probs.get(decision, float("nan")),
                    None, lead < 2 * BORDERLINE_MARGIN, decision == pos)


REFUSED_DECISION = "out of distribution: not a finding"  # a refused image's decision in the results table
UNREAD_DECISION = "not read"  # a file that could not be read: its message goes in the table's NOTE column
REASON = "reason (refused or unfamiliar)"  # the table's column with why an image was refused or shown with a caution
NOTE = "note"
_FLAG_WORDS = {True: "yes", False: "no", None: "not checked"}


def table_row(result: Mapping) -> dict:
    """One accepted or refused result as a row of the results table a clinician reads (the Predict page's):
    ``decision``, ``probability`` (the headline's: P(positive class), capped), ``borderline``, ``unfamiliar``
    (shown with a caution), ``out of distribution`` (refused), each class's capped probability ``P(<class>)``,
    then the long texts last: why it was refused or unfamiliar (:data:`REASON`). A refused image's decision
    says it is not a finding, with an empty probability, borderline and unfamiliar beside it.

    >>> row = table_row({"label": "NORMAL", "probabilities": {"NORMAL": 0.38, "PNEUMONIA": 0.62},
    ...                  "threshold": 0.75, "positive_class": "PNEUMONIA", "ood": False, "unfamiliar": True})
    >>> row["decision"], row["probability"], row["unfamiliar"], row["P(NORMAL)"]
    ('NORMAL', 'P(PNEUMONIA) = 62.0%', 'yes', '38.0%')

    The class columns take the card's plain words (:func:`class_word`): ``P(tumour)``, not ``P(yes)``.
    """
    h, ood = headline(result), result.get("ood")
    if ood:
        row = {"decision": REFUSED_DECISION, "probability": "", "borderline": "", "unfamiliar": ""}
        reason = result.get("ood_reason") or ""
    else:
        row = {"decision": h.decision, "probability": h.probability_text, "borderline": "yes" if h.borderline else "no",
               "unfamiliar": _FLAG_WORDS[result.get("unfamiliar")]}
        reason = (result.get("unfamiliar_reason") or "") if result.get("unfamiliar") else ""
    row["out of distribution"] = _FLAG_WORDS[ood]
    row.update({f"P({class_word(result, c)})": probability_text(p)
                for c, p in (result.get("probabilities") or {}).items()})
    row[REASON] = reason
    return row


def results_table(items: Sequence[Mapping]) -> list[dict]:
    """The rows of the results table for many files: each item ``{"file", **result}`` (:func:`table_row`) or
    ``{"file", "error"}`` for a file that could not be read (decision :data:`UNREAD_DECISION`, its message in
    the :data:`NOTE` column, which is there only when a file was not read). Every row has every column, in one
    order (empty text where a column does not apply: never None), the long texts last so that one long
    message does not push the probabilities out of sight.

    >>> rows = results_table([{"file": "a.png", "label": "CT", "probabilities": {"CT": 0.9, "MRI": 0.1}},
    ...                       {"file": "b.png", "error": "This file is not an image."}])
    >>> [(r["decision"], r["P(CT)"], r["note"]) for r in rows]
    [('CT', '90.0%', ''), ('not read', '', 'This file is not an image.')]
    """
    rows = [{"file": item.get("file", ""),
             **({"decision": UNREAD_DECISION, NOTE: str(item["error"])} if "error" in item else table_row(item))}
            for item in items]
    columns = ["file", "decision", "probability", "borderline", "unfamiliar", "out of distribution"]
    columns += [c for row in rows for c in row if c.startswith("P(")]
    columns += [REASON] + ([NOTE] if any(NOTE in row for row in rows) else [])
    columns = list(dict.fromkeys(columns))
    return [{c: row.get(c, "") for c in columns} for row in rows]


def gallery_caption(name: str, result: Mapping) -> str:
    """An image's caption in a gallery of results: its headline, marked when it is unfamiliar (shown with a
    caution), or that it was refused.

    >>> gallery_caption("a.png", {"label": "CT", "probabilities": {"CT": 0.9, "MRI": 0.1}, "unfamiliar": True})
    'a.png: CT (P(CT) = 90.0%) · unfamiliar'
    >>> gallery_caption("b.png", {"label": "CT", "probabilities": {"CT": 0.9, "MRI": 0.1}, "ood": True})
    'b.png: out of distribution (not a finding)'
    """
    if result.get("ood"):
        return f"{name}: out of distribution (not a finding)"
    return f"{name}: {headline(result).title}" + (" · unfamiliar" if result.get("unfamiliar") is True else "")


def feature_score_caption(result: Mapping, gate) -> str | None:
    """The result's feature score against the gate's two thresholds, each with its own value and rule
    (:func:`~medclf_core.trust.ood.score_caption`); None without a gate or a score."""
    score = result.get("ood_score")
    return None if gate is None or score is None else score_caption(gate, float(score))


def exported(result: Mapping) -> dict:
    """A result as the JSON and CSV exports give it: a refused image (``ood`` True: no finding) has no
    ``label`` (None), so no spreadsheet or script reads the model's output on it as a finding; its
    probabilities stay (what the model output, exactly). A result with probabilities gets ``borderline``
    (the headline's rule, :func:`headline`; None for a refused image: it has no decision).

    >>> exported({"label": "PNEUMONIA", "ood": True})["label"] is None
    True
    >>> exported({"label": "NORMAL", "probabilities": {"NORMAL": 0.27, "PNEUMONIA": 0.73}, "threshold": 0.75,
    ...           "positive_class": "PNEUMONIA", "ood": False})["borderline"]
    True
    """
    out = dict(result)
    if out.get("probabilities") and "label" in out:
        out["borderline"] = None if out.get("ood") is True else headline(out).borderline
    if out.get("ood") is True and "label" in out:
        out["label"] = None
    return out


@dataclass(frozen=True)
class HeatMap:
    """One heat map and what it explains (:meth:`~medclf_core.inference.predictor.Predictor.explain`).

    ``heatmap``: float32 in [0, 1], at the image's size or, when asked for, at display size
    (:func:`~medclf_core.explain.render.compact_map`). ``image``: the pixels it explains (for the
    overlay). ``faithfulness``: the deletion-test score (None when not computed or undefined, then
    ``deletion["note"]`` says why); ``deletion``: its curves, or None when not computed.
    """

    heatmap: np.ndarray
    image: np.ndarray
    method: str
    class_index: int
    class_name: str
    faithfulness: float | None = None
    deletion: dict | None = None

    def overlay(self, opacity: float = OVERLAY_OPACITY, max_side: int | None = None) -> np.ndarray:
        """The map in colour over the image (RGB uint8 at the image's size): cheap, for any opacity.
        ``max_side``: blended on the image shrunk to fit it (:func:`~medclf_core.explain.render.fit_for_display`),
        what a screen shows; the full size is for files (a PACS object, a report)."""
        image = self.image if max_side is None else fit_for_display(self.image, max_side)
        return overlay(image, self.heatmap, opacity)

    @staticmethod
    def legend(width: int = 512, height: int = 16) -> np.ndarray:
        """The colour scale of every :meth:`overlay` (RGB uint8, map value 0 at the left to 1 at the right),
        for a legend drawn before any map exists (:func:`~medclf_core.explain.render.colour_scale`)."""
        return colour_scale(width, height)

    def scored(self, deletion: dict) -> HeatMap:
        """This map with its deletion-test result (one dict of :func:`~medclf_core.explain.faithfulness.deletion_faithfulness`)."""
        return dataclasses.replace(self, faithfulness=deletion["faithfulness"], deletion=deletion)

    @property
    def faithfulness_caption(self) -> str:
        """The score with its verdict in words (:func:`~medclf_core.explain.faithfulness.faithfulness_verdict`),
        or why there is none."""
        if self.faithfulness is None:
            return "Faithfulness: n/a (" + ((self.deletion or {}).get("note") or "not computed") + ")."
        return f"Faithfulness {format_faithfulness(self.faithfulness)} ({faithfulness_verdict(self.faithfulness)})."


def for_display(pixels: np.ndarray, max_side: int = DISPLAY_SIDE) -> np.ndarray:
    """The copy of an image a page shows: at most ``max_side`` px on its longer side
    (:func:`~medclf_core.explain.render.fit_for_display`); the image itself when it fits. Pair it with
    ``HeatMap.overlay(opacity, max_side)`` so the original and its overlay are drawn at the same size."""
    return fit_for_display(pixels, max_side)


def image_digest(data: bytes) -> str:
    """The identity of an image's bytes (SHA-1, hex): part of every result's key.

    >>> image_digest(b"abc")
    'a9993e364706816aba3e25717850c26c9cd0d89d'
    """
    return hashlib.sha1(data).hexdigest()


def result_key(card, *asked) -> tuple:
    """The key under which a result of the model of ``card`` may be kept and reused.

    A result stays valid while the model's run (folder and creation time), its out-of-distribution
    threshold, its calibration temperature and the site calibration in use (if any) stay the same, and
    what was asked of it (``asked``: e.g. the image's :func:`image_digest`, the heat-map method and
    class; or a dataset and split); any change gives another key. ``card``: the model's card (a Predictor's ``card``).

    >>> card = {"run_dir": "models/chest", "created": "2026-01-01"}
    >>> result_key(card, "a9993e", "gradcam", 1) == result_key(dict(card), "a9993e", "gradcam", 1)
    True
    >>> result_key(card, "a9993e", "gradcam", 1) == result_key(card, "a9993e", "gradcam", 0)
    False
    """
    model = (card.get("run_dir"), card.get("created"), (card.get("ood") or {}).get("threshold"), temperature_of(card))
    site = card.get("site_calibration")  # a site's calibration in use (medclf_core.inference.sites)
    if site:
        model = (*model, tuple(sorted(site.items())))
    return (model, *asked)
