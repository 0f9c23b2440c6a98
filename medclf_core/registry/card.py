"""The model card: one validated type that every reader of ``card.json`` uses.

A card is read with :meth:`ModelCard.from_dict` (the registry's ``read_card`` does
it), which checks every field it knows, fills the documented defaults, and raises a
:class:`CardError` with a plain reason for a card that cannot be trusted. Readers then
index it without ``.get()`` chains: every known key is present (``card["tta"]``,
``card.tta``, ``card.metric("auc")``).

Schema versions:

- 1: the cards written before this module (no ``schema_version`` key; the bundled models carry 2 since
  they were retrained). Read leniently: missing keys get the defaults in :data:`DEFAULTS`.
- 2 (:data:`CARD_SCHEMA_VERSION`): ``schema_version`` is written, and the optional
  fields ``intended_use``, ``training_data``, ``calibration``, ``ood``, ``pretrained``
  and ``bundled`` are known.

Keys this module does not know are passed through untouched (read and written).
``ModelCard`` is a ``dict`` (JSON-serialisable as it is, and what older code that
indexes ``card["..."]`` expects); :meth:`ModelCard.to_dict` is the form written to
``card.json``. The positive class of a binary model is decided in one place,
:func:`positive_class_index`.

Example::

    >>> card = ModelCard.from_dict({"name": "demo", "class_names": ["NORMAL", "PNEUMONIA"],
    ...                             "created": "2026-01-01T00:00:00+00:00"})
    >>> card.schema_version, card.tta, card.threshold, card.positive_class, card.positive_index
    (1, [], None, None, 1)
    >>> card.to_dict()["schema_version"]
    2
    >>> ModelCard.from_dict({"name": "demo", "class_names": ["a", "b"], "threshold": "0.5"})
    Traceback (most recent call last):
    ...
    medclf_core.registry.card.CardError: The model card 'demo' is not valid: 'threshold' must be a number between 0 and 1 or null (found the text '0.5').
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from medclf_core.errors import ModelError
from medclf_core.formatting import CROSS_VALIDATION, MIN_RELIABLE_N, figures_source, metric_with_n
from medclf_core.registry.card_reading import class_labels, class_word, is_cross_validated
from medclf_core.registry.validation import InvalidField, describe, is_whole_number, validate_fields

CARD_SCHEMA_VERSION = 2
BUNDLED_MODEL_NAMES = frozenset({"brain-mri-tumour", "chest-xray-pneumonia", "imaging-modality"})
MAX_CARD_BYTES = 8 * 2**20  # a card is a few kB; a bigger one is refused, not parsed

# The keys every trained card carries (schema 1 and 2): training writes them, the bundled cards have them.
CARD_KEYS = ("name", "task", "class_names", "positive_class", "architecture", "input_shape", "input_spec",
             "cam_layer", "config", "dataset", "metrics", "validation_metrics", "threshold", "threshold_method",
             "training", "versions", "created")

# What a card missing a key (schema 1) reads as. Mutable values are copied per card.
DEFAULTS: dict[str, Any] = {
    "task": "",
    "positive_class": None,
    "architecture": None,
    "input_shape": None,
    "input_spec": None,
    "cam_layer": None,
    "tta": [],
    "ensemble": None,
    "config": {},
    "dataset": {},
    "metrics": {},
    "validation_metrics": {},
    "threshold": None,
    "threshold_method": None,
    "training": {},
    "versions": {},
    "created": None,
    # schema 2
    "bundled": False,
    "intended_use": None,
    "training_data": None,
    "calibration": None,
    "ood": None,
    "pretrained": None,
}
REQUIRED = ("name", "class_names")
KNOWN_KEYS = ("schema_version", *REQUIRED, *DEFAULTS)
INTENDED_USE_KEYS = ("summary", "modalities", "body_parts", "population", "age_years", "not_for", "finding_mimics",
                     "mr_sequences")
# Class names that mean "no finding": the other class of a binary task is the positive one.
NEGATIVE_NAMES = {"normal", "no", "negative", "healthy", "benign", "0", "false", "absent", "none"}


class CardError(ModelError):
    """A model card that cannot be used: not JSON, not an object, or a field of the wrong kind.

    ``reason`` is the plain reason alone (without the card's name).
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def _key(name: str, doc: str = ""):
    return property(lambda self: self[name], doc=doc or f"The card's ``{name}``.")


class ModelCard(dict):
    """A validated model card; a ``dict`` with every known key present, plus typed accessors.

    Build it with :meth:`from_dict`, write it with :meth:`to_dict`. ``run_dir`` is added by
    the registry when the card is read from a run folder (it is not written to the file).
    Changing a key afterwards is not re-validated.
    """

    schema_version = _key("schema_version", "1 for an older card without the key, else the version it was written with.")
    name = _key("name")
    task = _key("task")
    class_names = _key("class_names")
    positive_class = _key("positive_class")
    architecture = _key("architecture")
    input_shape = _key("input_shape")
    input_spec = _key("input_spec")
    cam_layer = _key("cam_layer")
    tta = _key("tta")
    ensemble = _key("ensemble")
    config = _key("config")
    dataset = _key("dataset")
    metrics = _key("metrics", "Same-source figures: the run's own held-out test (or validation) split.")
    validation_metrics = _key("validation_metrics")
    threshold = _key("threshold")
    threshold_method = _key("threshold_method")
    training = _key("training")
    versions = _key("versions")
    created = _key("created")
    bundled = _key("bundled")
    intended_use = _key("intended_use")
    training_data = _key("training_data")
    calibration = _key("calibration")
    ood = _key("ood")
    pretrained = _key("pretrained")

    # ------------------------------------------------------------------ build / write

    @classmethod
    def from_dict(cls, d: Any, *, source: str | None = None) -> ModelCard:
        """A validated card from parsed JSON; :class:`CardError` with the reason if it is not one.

        ``source`` names the card in messages (default: its ``name``, else "the model card").
        """
        label = source or (f"'{d['name']}'" if isinstance(d, dict) and isinstance(d.get("name"), str)
                           and len(d["name"]) <= 100 else "")

        def fail(reason: str):
            raise CardError(f"The model card {label + ' ' if label else ''}is not valid: {reason}.", reason)

        if not isinstance(d, dict):
            fail(f"it must be a JSON object, not {describe(d)}")
        version = d.get("schema_version", 1)
        if not is_whole_number(version) or version < 1:
            fail(f"'schema_version' must be a whole number (found {describe(version)})")
        if version > CARD_SCHEMA_VERSION:
            fail(f"it has schema version {version}, newer than this medclf reads ({CARD_SCHEMA_VERSION}); "
                 "update medclf")
        for key in REQUIRED:
            if key not in d:
                fail(f"it has no '{key}'")
        out = {k: copy.deepcopy(v) for k, v in d.items() if k not in ("run_dir",)}
        out["schema_version"] = version
        for key, default in DEFAULTS.items():
            if key not in out:
                out[key] = copy.deepcopy(default)
        try:
            validate_fields(out)
        except InvalidField as exc:
            fail(str(exc))
        card = cls(out)
        if isinstance(d.get("run_dir"), str):
            card["run_dir"] = d["run_dir"]
        return card

    def to_dict(self) -> dict:
        """The card as written to ``card.json``: schema version :data:`CARD_SCHEMA_VERSION`, no ``run_dir``."""
        out = {"schema_version": CARD_SCHEMA_VERSION}
        out.update({k: copy.deepcopy(v) for k, v in self.items() if k not in ("schema_version", "run_dir")})
        return out

    # ------------------------------------------------------------------ derived facts

    @property
    def run_dir(self) -> str | None:
        return self.get("run_dir")

    @property
    def positive_index(self) -> int | None:
        """Index of the positive class in ``class_names``: :func:`positive_class_index` of this card."""
        return positive_class_index(self["class_names"], self["positive_class"])

    @property
    def positive_class_text(self) -> str:
        """The positive class as a card shows it: the class (:attr:`positive_index`), or for a model without one
        (more than two classes) that its decision is the top class, never "None".

        >>> ModelCard.from_dict({"name": "m", "class_names": ["CT", "MRI", "XRAY"]}).positive_class_text
        'none (multi-class: the top class is the decision)'
        """
        index = self.positive_index
        return "none (multi-class: the top class is the decision)" if index is None else self["class_names"][index]

    def class_word(self, name) -> str:
        """A class in the plain words of ``intended_use.class_labels`` where the card gives them, else its name.

        >>> ModelCard.from_dict({"name": "m", "class_names": ["no", "yes"],
        ...                      "intended_use": {"class_labels": {"yes": "tumour"}}}).class_word("yes")
        'tumour'
        """
        return class_word(class_labels(self), name)

    @property
    def classes_text(self) -> str:
        """The classes as a card shows them: each name, with the card's plain words where they differ.

        >>> ModelCard.from_dict({"name": "m", "class_names": ["no", "yes"],
        ...                      "intended_use": {"class_labels": {"no": "no tumour", "yes": "tumour"}}}).classes_text
        'no (no tumour), yes (tumour)'
        """
        return ", ".join(c if self.class_word(c) == c else f"{c} ({self.class_word(c)})" for c in self["class_names"])

    @property
    def image_size(self) -> int | None:
        return self["input_shape"][0] if self["input_shape"] else None

    @property
    def channels(self) -> int | None:
        return self["input_shape"][2] if self["input_shape"] else None

    @property
    def test_n(self) -> int | None:
        """Images behind the same-source figures (``metrics["n"]``), None if unknown."""
        return self["metrics"].get("n")

    @property
    def is_cross_validated(self) -> bool:
        """Its same-source figures are out-of-fold predictions of every image (a small-data run), not a test split."""
        return is_cross_validated(self)

    @property
    def figures_source(self) -> str:
        """What its same-source figures were computed on, in words (:func:`medclf_core.formatting.figures_source`)."""
        return figures_source(self["metrics"].get("split"), self.test_n)

    @property
    def is_toy(self) -> bool:
        """Its same-source figures rest on fewer than :data:`MIN_RELIABLE_N` images (or on an unknown number)."""
        n = self.test_n
        return n is None or n < MIN_RELIABLE_N

    @property
    def is_bundled(self) -> bool:
        """A model shipped with medclf (by name, or ``"bundled": true``): deleting it needs a typed confirmation."""
        return bool(self["bundled"]) or self["name"] in BUNDLED_MODEL_NAMES

    def metric(self, key: str, split: str = "test"):
        """A same-source figure (``split`` "test": ``metrics``; "val": ``validation_metrics``), None if absent."""
        return (self["metrics"] if split == "test" else self["validation_metrics"]).get(key)

    def ci(self, key: str, split: str = "test") -> tuple[float, float] | None:
        ci = ((self["metrics"] if split == "test" else self["validation_metrics"]).get("ci95") or {}).get(key)
        return (ci[0], ci[1]) if ci else None

    def format_metric(self, key: str, split: str = "test", *, pct: bool = False) -> str:
        """A same-source figure with its interval and ``n`` (:func:`medclf_core.formatting.metric_with_n`;
        :meth:`metric_n`: a sensitivity's n is the positive images, not all of them)."""
        m = self["metrics"] if split == "test" else self["validation_metrics"]
        return metric_with_n(m.get(key), self.ci(key, split), self.metric_n(key, split), pct=pct)

    def metric_n(self, key: str, split: str = "test") -> int | None:
        """The images behind one same-source figure: all of them (``n``), but for ``sensitivity`` the images of
        the positive class and for ``specificity`` the others, from the dataset's per-class counts of the split
        the figures were computed on (None when those counts do not add up to ``n``: no n is better than a
        wrong one).

        >>> card = ModelCard.from_dict({"name": "m", "class_names": ["NORMAL", "PNEUMONIA"],
        ...     "positive_class": "PNEUMONIA", "metrics": {"split": "test", "n": 779},
        ...     "dataset": {"counts": {"test": {"NORMAL": 201, "PNEUMONIA": 578}}}})
        >>> card.metric_n("accuracy"), card.metric_n("sensitivity"), card.metric_n("specificity")
        (779, 578, 201)
        """
        m = self["metrics"] if split == "test" else self["validation_metrics"]
        counts = (self["dataset"] or {}).get("counts") or {}
        figures_on = m.get("split") or split
        per_class: dict = {}
        for name, split_counts in counts.items():
            if (figures_on == CROSS_VALIDATION or name == figures_on) and isinstance(split_counts, dict):
                for c, k in split_counts.items():
                    per_class[c] = per_class.get(c, 0) + (k if is_whole_number(k) else float("nan"))
        return figure_n(key, m.get("n"), per_class, self["positive_class"])


def figure_n(key: str, n, per_class: Mapping | None, positive) -> int | None:
    """The images behind one figure of a binary evaluation of ``n`` images: ``n``, but for ``sensitivity`` the
    ``positive`` class's count in ``per_class`` ({class: images}) and for ``specificity`` the others'; None for
    those two when the counts are missing or do not add up to ``n`` (no n is better than a wrong one).

    >>> figure_n("sensitivity", 87, {"no": 41, "yes": 46}, "yes"), figure_n("specificity", 87, {}, "yes")
    (46, None)
    """
    if key not in ("sensitivity", "specificity") or positive is None:
        return n
    per_class = dict(per_class or {})
    if not per_class or positive not in per_class or sum(per_class.values()) != n:
        return None
    return per_class[positive] if key == "sensitivity" else n - per_class[positive]


def parse_card_text(text: str | bytes, *, source: str | None = None) -> ModelCard:
    """:meth:`ModelCard.from_dict` of a ``card.json``'s text; invalid JSON is a :class:`CardError` too."""
    label = f"The model card {source + ' ' if source else ''}is damaged"
    if len(text) > MAX_CARD_BYTES:
        raise CardError(f"{label}: too large to be a model card.", "too large to be a model card")
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = f"not valid JSON ({exc})"
        raise CardError(f"{label}: {reason}.", reason) from None
    except RecursionError:
        raise CardError(f"{label}: nested too deeply.", "nested too deeply") from None
    return ModelCard.from_dict(d, source=source)


def threshold_rule_text(rule: dict) -> str | None:
    """The card's ``threshold_rule`` in one sentence: what the threshold was chosen for, then the parts of
    ``on`` (comma-separated) the rule does not already say, so nothing is said twice; None without a rule.

    >>> threshold_rule_text({"chosen_for": "the median over bootstrap resamples of the validation split, on "
    ...                      "calibrated probabilities", "on": "validation split, calibrated probabilities"})
    'Operating threshold: the median over bootstrap resamples of the validation split, on calibrated probabilities.'
    >>> threshold_rule_text({"chosen_for": "a validation sensitivity at or above the target",
    ...                      "on": "validation split, calibrated probabilities"})[-65:]
    'or above the target (validation split, calibrated probabilities).'
    """
    said = str(rule.get("chosen_for") or "")
    if not said:
        return None
    rest = [part for part in _top_level_parts(str(rule.get("on") or "")) if part.lower() not in said.lower()]
    if not rest:
        return f"Operating threshold: {said}."
    # Already in brackets ("... (a threshold ... follows single images)"): no second pair around them.
    rest_text = ", ".join(rest)
    return f"Operating threshold: {said}" + (f"; {rest_text}." if said.endswith(")") else f" ({rest_text}).")


def _top_level_parts(text: str) -> list[str]:
    """``text`` split at the commas outside brackets: "rule, not fitted (40 images, cross-validated)" is
    ["rule", "not fitted (40 images, cross-validated)"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def positive_class_index(class_names: list[str], positive_class: str | None = None) -> int | None:
    """The one positive-class rule: the index of ``positive_class`` when it is one of ``class_names``;
    else, for two classes, the finding (the class whose name is not 'normal', 'no', ...; the second
    when the names do not tell); None for more than two classes.

    Training records the result in the card (``positive_class``); the predictor, the Evaluate page
    and the metrics all call this, so a card without one is read the same way everywhere.

    >>> positive_class_index(["NORMAL", "PNEUMONIA"]), positive_class_index(["tumour", "normal"])
    (1, 0)
    >>> positive_class_index(["cat", "dog"], "cat"), positive_class_index(["CT", "MRI", "XRAY"])
    (0, None)
    """
    if positive_class is not None and positive_class in class_names:
        return list(class_names).index(positive_class)
    if len(class_names) != 2:
        return None
    lowered = [c.lower() for c in class_names]
    if lowered[0] in NEGATIVE_NAMES and lowered[1] not in NEGATIVE_NAMES:
        return 1
    if lowered[1] in NEGATIVE_NAMES and lowered[0] not in NEGATIVE_NAMES:
        return 0
    return 1
