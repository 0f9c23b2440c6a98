"""What the :class:`~medclf_core.inference.predictor.Predictor` hands a caller: results ready to show.

- :class:`Prediction`: one image's decision, probabilities and out-of-distribution verdict. A plain
  dict underneath (the CSV export, the PDF report and ``--json`` read it as such), with the
  verdict's words as a property.
- :class:`HeatMap`: one heat map with what it explains, the overlay at any opacity (re-rendered
  from the map, never recomputed) and its faithfulness score in words.
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
from dataclasses import dataclass

import numpy as np

from medclf_core.explain.faithfulness import faithfulness_verdict, format_faithfulness
from medclf_core.explain.render import overlay
from medclf_core.trust.calibration import temperature_of
from medclf_core.trust.verdict import ood_message


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
    def verdict_words(self) -> str | None:
        """The plain warning for a flagged image (:func:`medclf_core.trust.verdict.ood_message`), else None."""
        return ood_message(self)


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

    def overlay(self, opacity: float = 0.4) -> np.ndarray:
        """The map in colour over the image (RGB uint8 at the image's size): cheap, for any opacity."""
        return overlay(self.image, self.heatmap, opacity)

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
