"""The predictions CSV: prediction results as a spreadsheet, without patient identifiers.

:func:`predictions_csv` turns the list returned by
:meth:`medclf_core.inference.predictor.Predictor.predict_files` (or built the same way by
the app) into CSV text. The export holds only what the model produced and the
upload's *base* file name: never a folder path, never a DICOM header value. File
names are scrubbed of any identifying values the caller passes (see
:func:`medclf_core.io.deid.identifying_values`), and cells that a spreadsheet would
run as a formula are neutralised.

Example (``results`` as :meth:`~medclf_core.inference.predictor.Predictor.predict_files` returns them)::

    >>> results = [{"file": "/uploads/Doe_Jane_chest.png", "label": "PNEUMONIA",
    ...             "probabilities": {"NORMAL": 0.1, "PNEUMONIA": 0.9}, "ood": False},
    ...            {"file": "b.dcm", "error": "The file is empty (0 bytes)."}]
    >>> print(predictions_csv(results, identifying=["Doe", "Jane"]), end="")
    file,label,p_NORMAL,p_PNEUMONIA,threshold,positive_class,calibration,borderline,ood,ood_score,ood_reason,unfamiliar,unfamiliar_score,unfamiliar_reason,error,notes
    [redacted]_[redacted]_chest.png,PNEUMONIA,0.100000,0.900000,,,card,false,false,,,not checked,,,,
    b.dcm,,,,,,,,,,,,,,The file is empty (0 bytes).,
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from medclf_core.formatting import number
from medclf_core.inference.results import exported, headline
from medclf_core.io import deid
from medclf_core.io.deid import redact, safe_file_label
from medclf_core.trust.metrics import decide

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def predictions_csv(results: Sequence[Mapping], *, identifying: Iterable[str] = (),
                    truth: Sequence[str] | None = None) -> str:
    """CSV text: one row per result, columns ``file, label, p_<class>..., threshold, positive_class, calibration,
    borderline, ood, ood_score, ood_reason, unfamiliar, unfamiliar_score, unfamiliar_reason, error, notes``.

    ``results`` are dicts with ``file`` and either ``label``/``probabilities``
    (optionally ``threshold``, ``positive_class``, ``ood``, ``ood_score``, ``ood_reason``,
    ``notes``) or ``error``. ``ood`` is written ``true``, ``false``, or ``not checked``
    (the model has no out-of-distribution gate); empty for a file that could not be read. ``unfamiliar``
    (a finding shown with a caution: unlike the training images, not refused) is written the same way.
    ``calibration`` is ``card`` or ``site:<name>`` (whose temperature and threshold made the row; empty for a file
    that could not be read). ``borderline`` (the headline's rule, :func:`medclf_core.inference.results.headline`)
    is ``true`` or
    ``false``; empty for a refused image (no decision) and a file that could not be read.
    A row with ``ood`` true is refused, not a finding: its ``label`` is empty
    (:func:`medclf_core.inference.results.exported`); its probabilities are what the model output.
    A result's own ``identifying`` values (:func:`~medclf_core.io.deid.identifying_values` of that
    file's header; never written) are what its file name is scrubbed of, with the MRN-like patterns
    (:func:`~medclf_core.io.deid.safe_file_label`): a file's label is the same whether it is exported
    alone or with others. ``identifying`` (all files') is scrubbed from the free text (reasons, errors,
    notes) and from the name of a result that carries no values of its own.
    Any other key in a result (a DICOM header, a path to a heat map) is ignored. ``truth`` (an evaluation's
    true class per result) adds ``true_label`` and ``correct`` after ``label`` (``correct`` empty where there is no
    finding: a refused image, a file not read).
    """
    identifying = list(identifying)
    classes = _class_names(results)
    known = ["true_label", "correct"] if truth is not None else []
    columns = ["file", "label", *known, *(f"p_{c}" for c in classes), "threshold", "positive_class", "calibration",
               "borderline",
               "ood", "ood_score", "ood_reason", "unfamiliar", "unfamiliar_score", "unfamiliar_reason", "error", "notes"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([_cell(c) for c in columns])
    for i, r in enumerate(map(exported, results)):
        probs = r.get("probabilities") or {}
        own = r.get("identifying")
        texts = [*identifying, *(own or ())]
        truth_cells = [] if truth is None else [truth[i], _flag(r["label"] == truth[i] if r.get("label") else None)]
        row = [safe_file_label(r.get("file", ""), identifying if own is None else own), r.get("label") or "",
               *truth_cells,
               *(_probability(probs.get(c)) for c in classes),
               _number(r.get("threshold")), r.get("positive_class", ""),
               ("" if r.get("error") else r.get("calibration") or "card"), _flag(r.get("borderline")), _ood(r),
               _number(r.get("ood_score")), _scrub(r.get("ood_reason") or "", texts),
               _ood(r, "unfamiliar"), _number(r.get("unfamiliar_score")),
               _scrub(r.get("unfamiliar_reason") or "", texts), _scrub(r.get("error", ""), texts),
               _scrub("; ".join(r.get("notes") or []), texts)]
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def evaluation_csv(predictions: Mapping, *, threshold: float | None, positive: int | None,
                   calibration: str = "card") -> str:
    """An evaluation's images as CSV (the Evaluate page's download): :func:`predictions_csv`'s columns, each image's
    true class and whether the decision was right, decided as the page decides (at ``threshold`` for a binary
    model that has one, else the most probable class), with ``calibration`` (``card`` or ``site:<name>``: whose
    temperature and threshold the page used) on every row. ``predictions`` as
    :func:`medclf_core.inference.folder.predict_folder` or the stored test split give them.

    >>> import numpy as np
    >>> print(evaluation_csv({"rel": ["NORMAL/a.png", "PNEUMONIA/b.png"], "files": ["/x/a.png", "/x/b.png"],
    ...                       "y_true": np.array([0, 1]), "probs": np.array([[0.8, 0.2], [0.7, 0.3]]),
    ...                       "class_names": ["NORMAL", "PNEUMONIA"], "ood": [False, False]},
    ...                      threshold=0.5, positive=1).splitlines()[2][:50])
    b.png,NORMAL,PNEUMONIA,false,0.700000,0.300000,0.5
    """
    names, probs = list(predictions["class_names"]), np.asarray(predictions["probs"], dtype=float)
    binary = len(names) == 2 and threshold is not None and positive is not None
    decided = decide(probs, threshold if binary else None, positive)
    n = len(decided)
    column = {k: [None] * n if predictions.get(k) is None else list(predictions[k])
              for k in ("ood", "ood_score", "ood_reason", "unfamiliar", "unfamiliar_score", "unfamiliar_reason")}
    results = []
    for i in range(n):
        r = {"file": predictions["rel"][i], "label": names[int(decided[i])],
             "probabilities": dict(zip(names, map(float, probs[i]), strict=True)),
             "threshold": threshold if binary else None, "positive_class": names[positive] if binary else "",
             **{k: v[i] for k, v in column.items()}, "calibration": calibration,
             "identifying": deid.file_identifiers(predictions["files"][i])}
        results.append({**r, "borderline": headline(r).borderline})
    return predictions_csv(results, truth=[names[int(y)] for y in predictions["y_true"]])


def _class_names(results: Sequence[Mapping]) -> list[str]:
    """Class names in first-seen order across all results."""
    names: list[str] = []
    for r in results:
        for c in (r.get("probabilities") or {}):
            if c not in names:
                names.append(str(c))
    return names


def _ood(r: Mapping, key: str = "ood") -> str:
    if "probabilities" not in r:
        return ""
    v = r.get(key)
    return "not checked" if v is None else ("true" if v else "false")


def _flag(v) -> str:
    return "" if v is None else ("true" if v else "false")


def _probability(p) -> str:
    return "" if p is None else number(p, 6)


def _number(x) -> str:
    return "" if x is None else f"{float(x):.6g}"


def _scrub(text: str, identifying: list[str]) -> str:
    return redact(text, identifying) if text else ""


def _cell(value) -> str:
    """A CSV cell a spreadsheet will show as text, never run as a formula."""
    text = "" if value is None else str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    if text.startswith(_FORMULA_STARTS) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
