"""The field checks of a model card: what each known key of ``card.json`` may hold.

:func:`validate_fields` is what :meth:`medclf_core.registry.card.ModelCard.from_dict` runs on a
card whose defaults are filled; it raises :class:`InvalidField` with a plain reason (the
card module adds the card's name). Checks run in the card's key order, so the first bad
field is the one reported.

    >>> validate_fields({"name": "r", "task": "", "class_names": ["a"]})
    Traceback (most recent call last):
    ...
    medclf_core.registry.validation.InvalidField: 'class_names' must be a list of at least 2 non-empty texts (found a list (1 items))
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from medclf_core.errors import ModelError
from medclf_core.formatting import is_number
from medclf_core.registry.names import check_run_name

UNIT_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_precision", "macro_recall", "auc",
                "sensitivity", "specificity", "ece")  # figures that are fractions between 0 and 1
#: The one value of ``intended_use.mr_sequences``: the model is for structural MRI (T1, T2, FLAIR) only, and
#: :mod:`medclf_core.trust.mr_sequence` refuses what the DICOM header marks as diffusion, angiography and the rest.
STRUCTURAL_MRI = "structural"
#: The values of ``intended_use.planes``: the planes a model can judge (:mod:`medclf_core.trust.plane` cautions
#: on the others).
IMAGING_PLANES = ("axial", "sagittal", "coronal")
_MODALITY_RE = re.compile(r"^[A-Za-z0-9_ -]{1,16}$")  # a DICOM code string (CS): CT, MR, CR, DX, ... (any case)
_ISO_DATE = "an ISO date text such as 2026-11-23T07:49:25+00:00"


class InvalidField(Exception):
    """One field of a card holds what it may not; the message is the plain reason."""


def describe(v) -> str:
    """What a value is, for a message: ``the text 'abc'``, ``a list (3 items)``, ``null``."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the value {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, str):
        return f"the text {v[:40]!r}" + ("..." if len(v) > 40 else "")
    if isinstance(v, list):
        return f"a list ({len(v)} items)"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def is_whole_number(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str_list(v, key: str, *, min_len: int = 0) -> None:
    if not isinstance(v, list) or len(v) < min_len or not all(isinstance(s, str) and s for s in v):
        raise InvalidField(f"'{key}' must be a list of " + (f"at least {min_len} " if min_len else "")
                           + f"non-empty texts (found {describe(v)}"
                           + (f" holding {describe(next(s for s in v if not (isinstance(s, str) and s)))}"
                              if isinstance(v, list) and any(not (isinstance(s, str) and s) for s in v) else "")
                           + ")")


def _opt(v, key: str, types: tuple, what: str) -> None:
    if v is not None and not isinstance(v, types):
        raise InvalidField(f"'{key}' must be {what} or null (found {describe(v)})")


def validate_fields(c: dict) -> None:
    """Check every known field of ``c`` (defaults already filled); ``threshold`` becomes a float."""
    _validate_identity(c)
    _validate_model_fields(c)
    _validate_records(c)
    _validate_threshold_and_dates(c)
    _validate_schema_2_fields(c)


def _validate_identity(c: dict) -> None:
    """``name``, ``task``, ``class_names`` and ``positive_class``."""
    name = c["name"]
    if not isinstance(name, str):
        raise InvalidField(f"'name' must be a text (found {describe(name)})")
    try:
        check_run_name(name)
    except ModelError:
        raise InvalidField(f"'name' {name[:60]!r} is not a valid run name (letters, digits, '.', '_' and '-', "
                           "at most 100, starting with a letter or digit)") from None
    if not isinstance(c["task"], str):
        raise InvalidField(f"'task' must be a text (found {describe(c['task'])})")
    classes = c["class_names"]
    _str_list(classes, "class_names", min_len=2)
    if len(set(classes)) != len(classes):
        raise InvalidField("'class_names' must not repeat a class")
    pos = c["positive_class"]
    if pos is not None and pos not in classes:
        raise InvalidField(f"'positive_class' must be one of 'class_names' or null (found {describe(pos)})")


def _validate_model_fields(c: dict) -> None:
    """What rebuilds and runs the model: architecture, input shape and spec, CAM layer, TTA, ensemble."""
    _opt(c["architecture"], "architecture", (str,), "a text")
    shape = c["input_shape"]
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3
                                  and all(is_whole_number(s) for s in shape)
                                  and shape[0] == shape[1] and 1 <= shape[0] <= 4096 and shape[2] in (1, 3)):
        raise InvalidField(f"'input_shape' must be [size, size, 1 or 3] (found {json.dumps(shape)[:60]})")
    _opt(c["input_spec"], "input_spec", (dict,), "an object")
    cam = c["cam_layer"]
    if cam is not None and not isinstance(cam, str):
        _str_list(cam, "cam_layer", min_len=1)
    _str_list(c["tta"], "tta")
    ens = c["ensemble"]
    _opt(ens, "ensemble", (dict,), "an object")
    if ens is not None and not (is_whole_number(ens.get("members")) and ens["members"] >= 2):
        raise InvalidField(f"'ensemble.members' must be a whole number of at least 2 "
                           f"(found {describe(ens.get('members'))})")


def _validate_records(c: dict) -> None:
    """The objects training fills: config, dataset (with its counts), training, versions, and the metrics."""
    for key in ("config", "dataset", "training", "versions"):
        if not isinstance(c[key], dict):
            raise InvalidField(f"'{key}' must be an object (found {describe(c[key])})")
    counts = c["dataset"].get("counts")
    if counts is not None and not (isinstance(counts, dict) and all(
            isinstance(per, dict) and all(is_whole_number(n) and n >= 0 for n in per.values())
            for per in counts.values())):
        raise InvalidField("'dataset.counts' must map each split to image counts per class")
    for key in ("metrics", "validation_metrics"):
        _validate_metrics(c[key], key)


def _validate_threshold_and_dates(c: dict) -> None:
    """``threshold`` (made a float), ``threshold_method``, ``created`` and ``bundled``."""
    t = c["threshold"]
    if t is not None and not (is_number(t) and 0.0 <= t <= 1.0):
        raise InvalidField(f"'threshold' must be a number between 0 and 1 or null (found {describe(t)})")
    if t is not None:
        c["threshold"] = float(t)
    _opt(c["threshold_method"], "threshold_method", (str,), "a text")
    created = c["created"]
    if created is not None:
        if not isinstance(created, str):
            raise InvalidField(f"'created' must be {_ISO_DATE} (found {describe(created)})")
        try:
            datetime.fromisoformat(created)
        except ValueError:
            raise InvalidField(f"'created' must be {_ISO_DATE} (found {describe(created)})") from None
    if not isinstance(c["bundled"], bool):
        raise InvalidField(f"'bundled' must be true or false (found {describe(c['bundled'])})")


def _validate_schema_2_fields(c: dict) -> None:
    """The optional fields schema 2 added: intended use, training data, calibration, OOD gate, pretrained."""
    _validate_intended_use(c["intended_use"])
    labels = (c["intended_use"] or {}).get("class_labels")
    if labels is not None and not (isinstance(labels, dict) and all(
            isinstance(v, str) and 0 < len(v.strip()) <= 40 for v in labels.values())):  # a key that is no class: unused
        raise InvalidField("'intended_use.class_labels' must map class names to plain words of 1-40 characters, "
                           'e.g. {"yes": "tumour"}')
    _opt(c["training_data"], "training_data", (str,), "a text")
    _opt(c["calibration"], "calibration", (dict,), "an object")
    cal = c["calibration"]
    if cal and cal.get("temperature") is not None and not (is_number(cal["temperature"]) and cal["temperature"] > 0):
        raise InvalidField(f"'calibration.temperature' must be a positive number "
                           f"(found {describe(cal['temperature'])})")
    _opt(c["ood"], "ood", (dict,), "an object")
    _opt(c["pretrained"], "pretrained", (str, dict), "a text or an object")


def _validate_metrics(m, key: str) -> None:
    if not isinstance(m, dict):
        raise InvalidField(f"'{key}' must be an object (found {describe(m)})")
    n = m.get("n")
    if n is not None and not (is_whole_number(n) and n >= 0):
        raise InvalidField(f"'{key}.n' must be a whole number of images (found {describe(n)})")
    for k in UNIT_METRICS:
        v = m.get(k)
        if v is not None and not (is_number(v) and 0.0 <= v <= 1.0):
            raise InvalidField(f"'{key}.{k}' must be a number between 0 and 1 or null (found {describe(v)})")
    ci = m.get("ci95")
    if ci is None:
        return
    if not isinstance(ci, dict):
        raise InvalidField(f"'{key}.ci95' must be an object (found {describe(ci)})")
    for k, v in ci.items():
        if v is not None and not (isinstance(v, list) and len(v) == 2 and all(is_number(x) for x in v)):
            raise InvalidField(f"'{key}.ci95.{k}' must be [low, high] or null")


def _validate_intended_use(u) -> None:
    _opt(u, "intended_use", (dict,), "an object")
    if u is None:
        return
    for k in ("summary", "population", "finding_mimics"):
        _opt(u.get(k), f"intended_use.{k}", (str,), "a text")
    for k in ("modalities", "body_parts", "not_for"):
        if u.get(k) is not None:
            _str_list(u[k], f"intended_use.{k}")
    bad = [m for m in u.get("modalities") or [] if not _MODALITY_RE.match(m)]
    if bad:
        raise InvalidField(f"'intended_use.modalities' must be DICOM Modality codes such as CT, MR, CR, DX "
                           f"(found {bad[0][:20]!r})")
    if u.get("mr_sequences") not in (None, STRUCTURAL_MRI):
        raise InvalidField(f"'intended_use.mr_sequences' must be \"{STRUCTURAL_MRI}\" (T1, T2, FLAIR only) or absent")
    if u.get("planes") is not None:
        _str_list(u["planes"], "intended_use.planes")
        if not u["planes"] or any(p.lower() not in IMAGING_PLANES for p in u["planes"]):
            raise InvalidField(f"'intended_use.planes' must list some of {', '.join(IMAGING_PLANES)} (the planes "
                               "the model can judge) or be absent")
    age = u.get("age_years")
    if age is not None and not (isinstance(age, list) and len(age) == 2
                                and all(isinstance(a, int | float) and not isinstance(a, bool) for a in age)
                                and 0 <= age[0] <= age[1] <= 150):
        raise InvalidField("'intended_use.age_years' must be [youngest, oldest] in years, e.g. [1, 5]")
