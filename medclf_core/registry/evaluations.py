"""Evaluations on other data, recorded beside the model and read back.

``evaluate --record`` (and the Evaluate page) write one JSON record per dataset and day to
``<run>/evaluations/<UTC date>-<fingerprint[:12]>.json``; the Models page and the reports list
them next to the run's own (same-source) figures. A damaged record never hides the others.

    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> path = record_evaluation(run, {"n": 40, "accuracy": 0.9}, dataset="other", fingerprint="ab12" * 16)
    >>> [(e["dataset"], e["n"], e["metrics"]) for e in list_evaluations(run)]
    [('other', 40, {'accuracy': 0.9})]
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from medclf_core import __version__
from medclf_core.errors import ModelError
from medclf_core.formatting import is_number
from medclf_core.io.atomic import write_json
from medclf_core.registry.validation import is_whole_number

EVALUATIONS_DIR = "evaluations"
MAX_EVALUATION_BYTES = 4 * 2**20
_RECORD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "sensitivity", "specificity", "ece")
_SAFE_RE = re.compile(r"[^A-Za-z0-9]+")


def record_evaluation(run_dir: str | os.PathLike, result: dict, *, dataset: str, fingerprint: str,
                      extra: dict | None = None) -> Path:
    """Record an evaluation on other data beside the model; the path of the record.

    ``result`` is what ``inference.evaluate_folder`` (``evaluate --json``) returns; ``dataset``
    a short name for the data, ``fingerprint`` its ``dataset_fingerprint``
    (:mod:`medclf_core.data.fingerprint`). Written atomically to
    ``run_dir/evaluations/<UTC date>-<fingerprint[:12]>.json`` (the same data evaluated again on
    the same day replaces the day's record). ``extra`` keys are added as they are (for example
    an out-of-distribution summary).
    """
    run_dir = Path(run_dir)
    safe_fp = _check_recordable(run_dir, result, dataset, fingerprint)
    now = datetime.now(UTC)
    ci = result.get("ci95") if isinstance(result.get("ci95"), dict) else {}
    record = {
        "dataset": dataset.strip()[:200],
        "fingerprint": fingerprint,
        "split": result.get("split"),
        "n": result["n"],
        "metrics": {k: result[k] for k in _RECORD_METRICS if is_number(result.get(k))},
        "ci95": {k: v for k, v in ci.items() if v is not None},
        "threshold": result.get("threshold"),
        "positive_class": result.get("positive_class"),
        "class_names": result.get("class_names"),
        "n_per_class": per_class_counts(result),
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


def per_class_counts(result: Mapping) -> dict[str, int] | None:
    """``{class: images}`` of an evaluation result, from its confusion matrix's rows (true classes), so a
    sensitivity can be shown with the number of positive images behind it; None without a matrix.

    >>> per_class_counts({"class_names": ["no", "yes"], "confusion_matrix": [[39, 2], [4, 42]]})
    {'no': 41, 'yes': 46}
    """
    cm, names = result.get("confusion_matrix"), result.get("class_names")
    if not isinstance(cm, list) or not isinstance(names, list) or len(cm) != len(names):
        return None
    try:
        return {str(c): int(sum(row)) for c, row in zip(names, cm, strict=True)}
    except (TypeError, ValueError):
        return None


def _check_recordable(run_dir: Path, result, dataset, fingerprint) -> str:
    """The fingerprint's first 12 letters and digits (the record's file name), or a :class:`ModelError`."""
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir} is not a model run folder.")
    if not isinstance(result, dict) or not is_whole_number(result.get("n")) or result["n"] < 1:
        raise ModelError("This evaluation result has no image count ('n'); nothing was recorded.")
    if not isinstance(dataset, str) or not dataset.strip():
        raise ModelError("An evaluation needs a dataset name to be recorded.")
    safe_fp = _SAFE_RE.sub("", fingerprint or "")[:12] if isinstance(fingerprint, str) else ""
    if not safe_fp:
        raise ModelError("An evaluation needs the dataset's fingerprint to be recorded.")
    return safe_fp


def list_evaluations(run_dir: str | os.PathLike) -> list[dict]:
    """The recorded other-source evaluations of a run, newest first, each with ``file`` added.

    Damaged, oversized or incomplete records are skipped (one bad file never hides the others).
    """
    folder = Path(run_dir) / EVALUATIONS_DIR
    try:
        files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    except OSError:
        return []
    out = [rec for rec in map(_read_record, files) if rec is not None]
    return sorted(out, key=lambda r: r["date"], reverse=True)


def _read_record(path: Path) -> dict | None:
    """One record with its non-numeric metrics dropped, or None when it is damaged, too large or incomplete."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_EVALUATION_BYTES:
            return None
        rec = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not (isinstance(rec, dict) and isinstance(rec.get("dataset"), str) and is_whole_number(rec.get("n"))
            and isinstance(rec.get("metrics"), dict) and isinstance(rec.get("date"), str)):
        return None
    rec["metrics"] = {k: v for k, v in rec["metrics"].items() if is_number(v)}
    if not isinstance(rec.get("ci95"), dict):
        rec["ci95"] = {}
    rec["file"] = path.name
    return rec
