"""Evaluate a model on labelled studies held in a PACS: a CSV of ``StudyInstanceUID,label`` rows.

:func:`read_study_labels` checks the list (each label one of the model's classes, each UID a DICOM
UID, at most :data:`MAX_STUDIES` rows); :func:`stage_studies` fetches the image instances of each study
(at most ``max_instances`` per study, in series and instance order) into a private temporary
dataset folder, ``<label>/line<NNN>-<k>.dcm`` (``NNN``: the study's line in the CSV, so a result
names the user's own row and no identifier). The Evaluate page then runs the usual
:func:`medclf_core.inference.folder.evaluate_folder` on it with ``group_pattern=`` :data:`STUDY_PATTERN` (a study's
images are not independent: the 95% intervals resample studies): a PACS gets exactly the metrics, the
out-of-distribution check and the misclassified-images panel that a folder gets.

A study that cannot be read from the PACS (the PACS down, the password refused) stops the whole run with
its :class:`~medclf_core.pacs.client.PacsError`; a study without image series, or an instance that
cannot be fetched, is skipped and listed (``staged.skipped``).

Example::

    >>> rows = read_study_labels("StudyInstanceUID,label\\n1.2.3,normal\\n1.2.4,PNEUMONIA\\n",
    ...                          ["NORMAL", "PNEUMONIA"])
    >>> [(r.line, r.study_uid, r.label) for r in rows]
    [(2, '1.2.3', 'NORMAL'), (3, '1.2.4', 'PNEUMONIA')]
    >>> staged = stage_studies(conn, rows, max_instances=4)          # doctest: +SKIP
    >>> evaluate_folder(predictor, staged.root, "all", group_pattern=STUDY_PATTERN)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medclf_core.data.uploads import StagedDataset
from medclf_core.errors import DatasetError
from medclf_core.pacs.client import PacsError

MAX_STUDIES = 500  # rows of one CSV
DEFAULT_MAX_INSTANCES = 4  # image instances fetched per study (a CT series may hold hundreds)
MAX_INSTANCES = 64
#: The staged files' study (``line012`` of ``line012-3.dcm``): the group a study's images are resampled in.
STUDY_PATTERN = r"^(line\d+)-"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_HEADER_NAMES = {"studyinstanceuid", "study_instance_uid", "study_uid", "study"}


@dataclass(frozen=True)
class LabelledStudy:
    """One row of the list: its line in the CSV (1-based), the study's UID and the model's class name."""
    line: int
    study_uid: str
    label: str


def read_study_labels(text: str | bytes, class_names: Sequence[str]) -> list[LabelledStudy]:
    """The rows of a ``StudyInstanceUID,label`` CSV (a header row is optional; labels match the model's
    ``class_names`` case-insensitively). :class:`DatasetError` naming the line of the first bad row."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DatasetError("The study list is not a text (CSV) file.") from None
    by_lower = {c.lower(): c for c in class_names}
    rows: list[LabelledStudy] = []
    seen: dict[str, str] = {}
    for line, cells in enumerate(csv.reader(io.StringIO(text)), 1):
        cells = [c.strip() for c in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not rows and line == _first_line(text) and cells[0].lower() in _HEADER_NAMES:
            continue  # the header
        if len(cells) < 2 or not cells[1]:
            raise DatasetError(f"Line {line} of the study list needs two columns: StudyInstanceUID,label.")
        uid, label = cells[0], cells[1]
        if not _UID.fullmatch(uid) or len(uid) > 64:
            raise DatasetError(f"Line {line} of the study list: the first column is not a DICOM UID "
                               "(digits and dots, at most 64 characters).")
        if label.lower() not in by_lower:
            raise DatasetError(f"Line {line} of the study list: the label is not one of the model's classes "
                               f"({', '.join(class_names)}).")
        label = by_lower[label.lower()]
        if uid in seen:
            if seen[uid] != label:
                raise DatasetError(f"Line {line} of the study list: this study is listed before with another label.")
            continue
        seen[uid] = label
        rows.append(LabelledStudy(line, uid, label))
        if len(rows) > MAX_STUDIES:
            raise DatasetError(f"The study list has more than {MAX_STUDIES} studies; split it into smaller lists.")
    if not rows:
        raise DatasetError("The study list is empty: one StudyInstanceUID,label row per study.")
    return rows


def _first_line(text: str) -> int:
    """The 1-based number of the first line that is not blank or a comment (where a header may be)."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.strip().startswith("#"):
            return n
    return 1


def stage_studies(conn, rows: Sequence[LabelledStudy], *, max_instances: int = DEFAULT_MAX_INSTANCES,
                  progress: Callable[[int, int], None] | None = None) -> StagedDataset:
    """Fetch up to ``max_instances`` image instances of each study of ``rows`` from ``conn`` (a
    :class:`~medclf_core.pacs.client.PacsConnection`) into a new :class:`StagedDataset` laid out as
    ``<label>/line<NNN>-<k>.dcm``; ``staged.skipped`` lists each study or instance left out, with why.
    ``progress(done, total)`` after each study. :class:`PacsError` (and nothing left on disk) when the
    PACS fails; :class:`DatasetError` when no study gave an image."""
    max_instances = max(1, min(int(max_instances), MAX_INSTANCES))
    staged = StagedDataset()
    try:
        written = 0
        for n, row in enumerate(rows, 1):
            written += _stage_one(conn, row, Path(staged.root), max_instances, staged.skipped)
            if progress:
                progress(n, len(rows))
        if not written:
            raise DatasetError("None of the listed studies has an image that could be fetched from the PACS"
                               + (f" ({staged.skipped[0]['error']})" if staged.skipped else "") + ".")
    except BaseException:
        staged.remove()
        raise
    return staged


def _stage_one(conn, row: LabelledStudy, root: Path, max_instances: int, skipped: list[dict]) -> int:
    """The images of one study written under ``root/<label>``; how many. Listing errors propagate (the PACS
    failed); an instance that cannot be fetched is skipped."""
    name = f"line{row.line:03d}"
    series = [s for s in conn.list_series(row.study_uid) if s.is_image]
    picked: list[tuple[str, str]] = []
    for s in series:
        picked += [(s.series_uid, i["sop_instance_uid"]) for i in conn.instances(row.study_uid, s.series_uid)
                   if i["is_image"]]
        if len(picked) >= max_instances:
            break
    if not picked:
        skipped.append({"file": f"{name} ({row.label})",
                        "error": "the PACS has no image of this study (not found, empty, or only reports)"})
        return 0
    if len(picked) > max_instances:
        skipped.append({"file": f"{name} ({row.label})",
                        "error": f"only the first {max_instances} images of this study were used"})
    folder = root / row.label
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for k, (series_uid, sop_uid) in enumerate(picked[:max_instances], 1):
        try:
            data = conn.fetch_instance(row.study_uid, series_uid, sop_uid)
        except PacsError as exc:
            skipped.append({"file": f"{name}-{k}.dcm", "error": str(exc)})
            continue
        (folder / f"{name}-{k}.dcm").write_bytes(data)
        count += 1
    return count
