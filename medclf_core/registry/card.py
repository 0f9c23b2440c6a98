"""The model card: one validated type that every reader of ``card.json`` uses.

A card is read with :meth:`ModelCard.from_dict` (the registry's ``read_card`` does
it), which checks every field it knows, fills the documented defaults, and raises a
:class:`CardError` with a plain reason for a card that cannot be trusted. Readers then
index it without ``.get()`` chains: every known key is present (``card["tta"]``,
``card.tta``, ``card.metric("auc")``).

Schema versions:

- 1: the cards written before this module (no ``schema_version`` key; the bundled
  models). Read leniently: missing keys get the defaults in :data:`DEFAULTS`.
- 2 (:data:`CARD_SCHEMA_VERSION`): ``schema_version`` is written, and the optional
  fields ``intended_use``, ``training_data``, ``calibration``, ``ood``, ``pretrained``
  and ``bundled`` are known.

Keys this module does not know are passed through untouched (read and written).
``ModelCard`` is a ``dict`` (JSON-serialisable as it is, and what older code that
indexes ``card["..."]`` expects); :meth:`ModelCard.to_dict` is the form written to
``card.json``.

Evaluations on other data are recorded beside the model by :func:`record_evaluation`
(``<run>/evaluations/<UTC date>-<fingerprint[:12]>.json``) and read back by
:func:`list_evaluations`. :func:`format_metric` prints a figure with its interval and
its ``n``, and says so when ``n`` is too small for the figure to mean much.

Example::

    >>> card = ModelCard.from_dict({"name": "demo", "class_names": ["NORMAL", "PNEUMONIA"],
    ...                             "created": "2026-01-01T00:00:00+00:00"})
    >>> card.schema_version, card.tta, card.threshold, card.positive_class
    (1, [], None, None)
    >>> card.to_dict()["schema_version"]
    2
    >>> ModelCard.from_dict({"name": "demo", "class_names": ["a", "b"], "threshold": "0.5"})
    Traceback (most recent call last):
    ...
    medclf_core.registry.card.CardError: The model card 'demo' is not valid: 'threshold' must be a number between 0 and 1 or null (found the text '0.5').
    >>> format_metric(1.0, ci=(1.0, 1.0), n=12)
    '1.000 (n = 12, too few images for a reliable figure)'
    >>> format_metric(0.964, ci=(0.951, 0.977), n=779)
    '0.964 (95% CI 0.951-0.977, n = 779)'
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medclf_core.errors import ModelError

CARD_SCHEMA_VERSION = 2
MIN_RELIABLE_N = 30  # below this many test images a metric is shown with a warning
BUNDLED_MODEL_NAMES = frozenset({"brain-mri-tumour", "chest-xray-pneumonia", "imaging-modality"})
EVALUATIONS_DIR = "evaluations"
MAX_CARD_BYTES = 8 * 2**20  # a card is a few kB; a bigger one is refused, not parsed
MAX_EVALUATION_BYTES = 4 * 2**20

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
INTENDED_USE_KEYS = ("summary", "modalities", "body_parts", "population", "not_for")
_UNIT_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_precision", "macro_recall", "auc",
                 "sensitivity", "specificity", "ece")
_MODALITY_RE = re.compile(r"^[A-Za-z0-9_ -]{1,16}$")  # a DICOM code string (CS): CT, MR, CR, DX, ... (any case)
_SAFE_RE = re.compile(r"[^A-Za-z0-9]+")


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
            fail(f"it must be a JSON object, not {_describe(d)}")
        version = d.get("schema_version", 1)
        if not _is_int(version) or version < 1:
            fail(f"'schema_version' must be a whole number (found {_describe(version)})")
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
            _validate(out)
        except _Invalid as exc:
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
        """Index of ``positive_class`` in ``class_names`` (None when the card names none)."""
        return self["class_names"].index(self["positive_class"]) if self["positive_class"] is not None else None

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
        """:func:`format_metric` of a same-source figure, with its interval and ``n``."""
        m = self["metrics"] if split == "test" else self["validation_metrics"]
        return format_metric(m.get(key), self.ci(key, split), m.get("n"), pct=pct)


# ---------------------------------------------------------------------------- validation

class _Invalid(Exception):
    pass


def _describe(v) -> str:
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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _str_list(v, key: str, *, min_len: int = 0) -> None:
    if not isinstance(v, list) or len(v) < min_len or not all(isinstance(s, str) and s for s in v):
        raise _Invalid(f"'{key}' must be a list of " + (f"at least {min_len} " if min_len else "")
                       + f"non-empty texts (found {_describe(v)}"
                       + (f" holding {_describe(next(s for s in v if not (isinstance(s, str) and s)))}"
                          if isinstance(v, list) and any(not (isinstance(s, str) and s) for s in v) else "") + ")")


def _opt(v, key: str, types: tuple, what: str) -> None:
    if v is not None and not isinstance(v, types):
        raise _Invalid(f"'{key}' must be {what} or null (found {_describe(v)})")


def _validate(c: dict) -> None:
    from medclf_core.registry.store import check_run_name

    name = c["name"]
    if not isinstance(name, str):
        raise _Invalid(f"'name' must be a text (found {_describe(name)})")
    try:
        check_run_name(name)
    except ModelError:
        raise _Invalid(f"'name' {name[:60]!r} is not a valid run name (letters, digits, '.', '_' and '-', "
                       "at most 100, starting with a letter or digit)") from None
    if not isinstance(c["task"], str):
        raise _Invalid(f"'task' must be a text (found {_describe(c['task'])})")

    classes = c["class_names"]
    _str_list(classes, "class_names", min_len=2)
    if len(set(classes)) != len(classes):
        raise _Invalid("'class_names' must not repeat a class")
    pos = c["positive_class"]
    if pos is not None and pos not in classes:
        raise _Invalid(f"'positive_class' must be one of 'class_names' or null (found {_describe(pos)})")

    _opt(c["architecture"], "architecture", (str,), "a text")
    shape = c["input_shape"]
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(s) for s in shape)
                                  and shape[0] == shape[1] and 1 <= shape[0] <= 4096 and shape[2] in (1, 3)):
        raise _Invalid(f"'input_shape' must be [size, size, 1 or 3] (found {json.dumps(shape)[:60]})")
    _opt(c["input_spec"], "input_spec", (dict,), "an object")
    cam = c["cam_layer"]
    if cam is not None and not isinstance(cam, str):
        _str_list(cam, "cam_layer", min_len=1)
    _str_list(c["tta"], "tta")
    ens = c["ensemble"]
    _opt(ens, "ensemble", (dict,), "an object")
    if ens is not None and not (_is_int(ens.get("members")) and ens["members"] >= 2):
        raise _Invalid(f"'ensemble.members' must be a whole number of at least 2 (found {_describe(ens.get('members'))})")
    for key in ("config", "dataset", "training", "versions"):
        if not isinstance(c[key], dict):
            raise _Invalid(f"'{key}' must be an object (found {_describe(c[key])})")
    counts = c["dataset"].get("counts")
    if counts is not None and not (isinstance(counts, dict) and all(
            isinstance(per, dict) and all(_is_int(n) and n >= 0 for n in per.values()) for per in counts.values())):
        raise _Invalid("'dataset.counts' must map each split to image counts per class")
    for key in ("metrics", "validation_metrics"):
        _validate_metrics(c[key], key)

    t = c["threshold"]
    if t is not None and not (_is_num(t) and 0.0 <= t <= 1.0):
        raise _Invalid(f"'threshold' must be a number between 0 and 1 or null (found {_describe(t)})")
    if t is not None:
        c["threshold"] = float(t)
    _opt(c["threshold_method"], "threshold_method", (str,), "a text")
    created = c["created"]
    if created is not None:
        if not isinstance(created, str):
            raise _Invalid(f"'created' must be an ISO date text such as 2026-11-23T07:49:25+00:00 "
                           f"(found {_describe(created)})")
        try:
            datetime.fromisoformat(created)
        except ValueError:
            raise _Invalid(f"'created' must be an ISO date text such as 2026-11-23T07:49:25+00:00 "
                           f"(found {_describe(created)})") from None
    if not isinstance(c["bundled"], bool):
        raise _Invalid(f"'bundled' must be true or false (found {_describe(c['bundled'])})")

    _validate_intended_use(c["intended_use"])
    _opt(c["training_data"], "training_data", (str,), "a text")
    _opt(c["calibration"], "calibration", (dict,), "an object")
    cal = c["calibration"]
    if cal and cal.get("temperature") is not None and not (_is_num(cal["temperature"]) and cal["temperature"] > 0):
        raise _Invalid(f"'calibration.temperature' must be a positive number (found {_describe(cal['temperature'])})")
    _opt(c["ood"], "ood", (dict,), "an object")
    _opt(c["pretrained"], "pretrained", (str, dict), "a text or an object")


def _validate_metrics(m, key: str) -> None:
    if not isinstance(m, dict):
        raise _Invalid(f"'{key}' must be an object (found {_describe(m)})")
    n = m.get("n")
    if n is not None and not (_is_int(n) and n >= 0):
        raise _Invalid(f"'{key}.n' must be a whole number of images (found {_describe(n)})")
    for k in _UNIT_METRICS:
        v = m.get(k)
        if v is not None and not (_is_num(v) and 0.0 <= v <= 1.0):
            raise _Invalid(f"'{key}.{k}' must be a number between 0 and 1 or null (found {_describe(v)})")
    ci = m.get("ci95")
    if ci is None:
        return
    if not isinstance(ci, dict):
        raise _Invalid(f"'{key}.ci95' must be an object (found {_describe(ci)})")
    for k, v in ci.items():
        if v is not None and not (isinstance(v, list) and len(v) == 2 and all(_is_num(x) for x in v)):
            raise _Invalid(f"'{key}.ci95.{k}' must be [low, high] or null")


def _validate_intended_use(u) -> None:
    _opt(u, "intended_use", (dict,), "an object")
    if u is None:
        return
    for k in ("summary", "population"):
        _opt(u.get(k), f"intended_use.{k}", (str,), "a text")
    for k in ("modalities", "body_parts", "not_for"):
        if u.get(k) is not None:
            _str_list(u[k], f"intended_use.{k}")
    bad = [m for m in u.get("modalities") or [] if not _MODALITY_RE.match(m)]
    if bad:
        raise _Invalid(f"'intended_use.modalities' must be DICOM Modality codes such as CT, MR, CR, DX "
                       f"(found {bad[0][:20]!r})")


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


# ---------------------------------------------------------------------------- metrics as text

def format_metric(value, ci=None, n=None, *, pct: bool = False) -> str:
    """A figure with its 95% interval and ``n``: ``0.964 (95% CI 0.951-0.977, n = 779)``.

    With ``n`` below :data:`MIN_RELIABLE_N` the interval is left out and a warning takes its
    place: ``1.000 (n = 12, too few images for a reliable figure)``. An interval whose ends
    print the same is never shown (no ``1.000 (1.000-1.000)``). ``None`` prints ``n/a``.
    """
    if not _is_num(value):
        return "n/a"

    def f(v: float) -> str:
        return f"{v:.1%}" if pct else f"{v:.3f}"

    text = f(value)
    if _is_int(n) and n < MIN_RELIABLE_N:
        return f"{text} (n = {n}, too few images for a reliable figure)"
    parts = []
    if ci is not None and len(ci) == 2 and all(_is_num(v) for v in ci) and f(ci[0]) != f(ci[1]):
        parts.append(f"95% CI {f(ci[0])}-{f(ci[1])}")
    if _is_int(n):
        parts.append(f"n = {n}")
    return text + (f" ({', '.join(parts)})" if parts else "")


# ---------------------------------------------------------------------------- other-source evaluations

_RECORD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "sensitivity", "specificity", "ece")


def record_evaluation(run_dir: str | os.PathLike, result: dict, *, dataset: str, fingerprint: str,
                      extra: dict | None = None) -> Path:
    """Record an evaluation on other data beside the model; the path of the record.

    ``result`` is what ``inference.evaluate_folder`` (``evaluate --json``) returns; ``dataset``
    a short name for the data, ``fingerprint`` its :func:`dataset_fingerprint`. Written
    atomically to ``run_dir/evaluations/<UTC date>-<fingerprint[:12]>.json`` (the same data
    evaluated again on the same day replaces the day's record). ``extra`` keys are added
    as they are (for example an out-of-distribution summary).
    """
    from medclf_core import __version__
    from medclf_core.registry.store import write_json

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir} is not a model run folder.")
    if not isinstance(result, dict) or not _is_int(result.get("n")) or result["n"] < 1:
        raise ModelError("This evaluation result has no image count ('n'); nothing was recorded.")
    if not isinstance(dataset, str) or not dataset.strip():
        raise ModelError("An evaluation needs a dataset name to be recorded.")
    safe_fp = _SAFE_RE.sub("", fingerprint or "")[:12] if isinstance(fingerprint, str) else ""
    if not safe_fp:
        raise ModelError("An evaluation needs the dataset's fingerprint to be recorded.")
    now = datetime.now(UTC)
    metrics = {k: result[k] for k in _RECORD_METRICS if _is_num(result.get(k))}
    ci = result.get("ci95") if isinstance(result.get("ci95"), dict) else {}
    record = {
        "dataset": dataset.strip()[:200],
        "fingerprint": fingerprint,
        "split": result.get("split"),
        "n": result["n"],
        "metrics": metrics,
        "ci95": {k: v for k, v in ci.items() if v is not None},
        "threshold": result.get("threshold"),
        "positive_class": result.get("positive_class"),
        "class_names": result.get("class_names"),
        "skipped": len(result.get("skipped") or []),
        "model": result.get("model"),
        "date": now.isoformat(timespec="seconds"),
        "medclf_version": __version__,
        **(extra or {}),
    }
    folder = run_dir / EVALUATIONS_DIR
    path = folder / f"{now.date().isoformat()}-{safe_fp}.json"
    try:
        folder.mkdir(exist_ok=True)
        write_json(path, record)
    except OSError as exc:
        raise ModelError(f"The evaluation could not be recorded in {folder} ({exc.strerror or exc}).") from None
    return path


def list_evaluations(run_dir: str | os.PathLike) -> list[dict]:
    """The recorded other-source evaluations of a run, newest first, each with ``file`` added.

    Damaged, oversized or incomplete records are skipped (one bad file never hides the others).
    """
    folder = Path(run_dir) / EVALUATIONS_DIR
    try:
        files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    except OSError:
        return []
    out = []
    for p in files:
        try:
            if not p.is_file() or p.stat().st_size > MAX_EVALUATION_BYTES:
                continue
            rec = json.loads(p.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if not (isinstance(rec, dict) and isinstance(rec.get("dataset"), str) and _is_int(rec.get("n"))
                and isinstance(rec.get("metrics"), dict) and isinstance(rec.get("date"), str)):
            continue
        rec["metrics"] = {k: v for k, v in rec["metrics"].items() if _is_num(v)}
        if not isinstance(rec.get("ci95"), dict):
            rec["ci95"] = {}
        rec["file"] = p.name
        out.append(rec)
    return sorted(out, key=lambda r: r["date"], reverse=True)


def dataset_fingerprint(data, *, split: str = "all") -> str:
    """A content fingerprint of a dataset, without decoding any image (cheap next to the audit).

    ``data``: an ``AuditReport`` (its pixel fingerprint, the one training records in
    ``card["dataset"]["fingerprint"]``), a ``DatasetIndex``, or a dataset folder or zip.
    For an index or a path it is the sha256 over (relative path, class, sha256 of the
    file's bytes) of the files in ``split`` ("all", "train", "val", "test", or "auto":
    the ``test`` folder of a pre-split dataset, else all, as ``evaluate`` chooses).
    """
    if isinstance(getattr(data, "fingerprint", None), str):
        return data.fingerprint
    if hasattr(data, "items") and hasattr(data, "class_names") and hasattr(data, "presplit"):
        return _index_fingerprint(data, split)
    import tempfile

    from medclf_core.data.dataset import scan_dataset

    with tempfile.TemporaryDirectory(prefix="medclf-fp-") as tmp:
        return _index_fingerprint(scan_dataset(data, extract_to=tmp), split)


def _index_fingerprint(index, split: str) -> str:
    if split == "auto":
        split = "test" if index.presplit and any(it.split == "test" for it in index.items) else "all"
    lines = []
    for it in sorted(index.items, key=lambda x: x.rel):
        if split != "all" and it.split != split:
            continue
        h = hashlib.sha256()
        try:
            with open(it.path, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(chunk)
            digest = h.hexdigest()
        except OSError:
            digest = "unreadable"
        lines.append(f"{it.rel}\t{index.class_names[it.label]}\t{digest}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


PERFORMANCE_METRICS = (("accuracy", "accuracy"), ("AUC", "auc"), ("sensitivity", "sensitivity"),
                       ("specificity", "specificity"), ("ECE", "ece"))


def performance_rows(card: ModelCard, evaluations: list[dict] | None = None) -> list[dict]:
    """Same-source and other-source figures side by side, each with its n: one row per evaluation.

    The first row is the run's own held-out split; the others are the evaluations recorded with
    ``evaluate --record`` (:func:`list_evaluations`). Every figure goes through
    :func:`format_metric`, so a figure on fewer than 30 images says so.

    Example::

        >>> card = ModelCard.from_dict({"name": "m", "class_names": ["a", "b"],
        ...                             "metrics": {"n": 12, "accuracy": 1.0, "ci95": {"accuracy": [1.0, 1.0]}}})
        >>> performance_rows(card, [])[0]["accuracy"]
        '1.000 (n = 12, too few images for a reliable figure)'
    """
    rows = [{"data": f"own test split ({(card.dataset or {}).get('name') or 'training source'}, same source)",
             "n": card.test_n,
             **{label: card.format_metric(key) for label, key in PERFORMANCE_METRICS}}]
    for e in evaluations if evaluations is not None else list_evaluations(card.run_dir) if card.run_dir else []:
        ci = e.get("ci95") or {}
        rows.append({"data": f"{e.get('dataset')} (other data, {str(e.get('date') or '')[:10]})", "n": e.get("n"),
                     **{label: format_metric((e.get("metrics") or {}).get(key), ci.get(key), e.get("n"))
                        for label, key in PERFORMANCE_METRICS}})
    return rows
