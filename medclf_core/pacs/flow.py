"""A study (or one series) from the PACS through the same path as an upload, and, on request, the results back.

:func:`predict_from_pacs` lists the study's series, skips those without images (SR, PDF, key objects: each
with a note), reads at most ``max_instances`` image instances (a stated limit: the note says how many were
left), hands their Part 10 bytes to :meth:`Predictor.predict_files <medclf_core.inference.predictor.Predictor.
predict_files>` (the one decode, gate and verdict path of uploads and the CLI) and, with ``store``, writes each
result back (:mod:`medclf_core.pacs.writeback`: SR, heat-map Secondary Capture, optionally the PDF) as new
series of the same study, all or nothing. A PACS that stops answering half way never loses the results
already computed: they come back with an ``error`` or ``store_error`` that says what happened.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from medclf_core.explain.render import OVERLAY_OPACITY
from medclf_core.pacs.client import PacsConnection, PacsError
from medclf_core.pacs.writeback import WriteSeries, build_objects, store_all_or_nothing, verdict_of

MAX_INSTANCES = 64  # image instances read per call: a CT series can hold thousands


def plan_instances(conn: PacsConnection, study_uid: str, series_uid: str | None = None,
                   max_instances: int = MAX_INSTANCES) -> tuple[list[dict], list[str]]:
    """``(instances to read, notes)``: each instance ``{"series", "sop_instance_uid", "instance_number"}``
    of the study's image series (or of ``series_uid``), at most ``max_instances``; notes say what was skipped."""
    series = conn.list_series(study_uid)
    if not series:  # a study exists in a PACS only with its series: none means no such study
        raise PacsError(f"The PACS at {conn.where} has no study with the Study Instance UID given: check the UID "
                        "(it may also have been removed).")
    if series_uid:
        series = [s for s in series if s.series_uid == series_uid]
        if not series:
            raise PacsError("The study has no series with the Series Instance UID given.")
    notes, todo, total = [], [], 0
    for s in series:
        label = f"series {s.series_number if s.series_number is not None else '?'} ({s.modality or 'no modality'})"
        if not s.is_image:
            notes.append(f"Skipped {label}: a {s.modality} series holds no images to classify.")
            continue
        if (s.description or "").startswith("medclf "):
            notes.append(f"Skipped {label}: medclf's own results ({s.description}).")
            continue
        rows = conn.instances(study_uid, s.series_uid)
        skipped = [r for r in rows if not r["is_image"]]
        if skipped:
            notes.append(f"Skipped {len(skipped)} instance(s) of {label} that hold no image (reports or documents).")
        for r in (r for r in rows if r["is_image"]):
            total += 1
            if len(todo) < max_instances:
                todo.append({**r, "series": s, "label": f"{label}, instance {r['instance_number'] or '?'}"})
    if total > len(todo):
        notes.append(f"The {'series' if series_uid else 'study'} has {total} image instances; only the first "
                     f"{len(todo)} were read (the limit is {max_instances} per request: choose a series, or "
                     "raise the limit).")
    if not todo:
        kinds = ", ".join(sorted({str(s.modality) for s in series})) or "none"
        raise PacsError(f"There are no images to classify here (series found: {len(series)}; modalities: {kinds}).")
    return todo, notes


def predict_from_pacs(predictor, conn: PacsConnection, study_uid: str, series_uid: str | None = None, *,
                      store: bool = False, max_instances: int = MAX_INSTANCES, method: str = "gradcam",
                      opacity: float = OVERLAY_OPACITY, report: bool = False, notes: list | None = None,
                      progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One result per image instance read (as ``medclf predict --json`` gives, plus ``sop_instance_uid`` and
    ``series_instance_uid``; ``file`` is a label without identifiers). With ``store``: each result also gets
    ``stored`` (``{"sr", "sc", "pdf"}`` SOP Instance UIDs written) or, when the write failed, ``store_error``.
    ``notes`` (a list) receives what was skipped or limited; ``progress(done, total)`` follows the reads."""
    todo, found_notes = plan_instances(conn, study_uid, series_uid, max_instances)
    if notes is not None:
        notes.extend(found_notes)
    data = _fetch_all(conn, study_uid, todo, progress)
    readable = [i for i, d in enumerate(data) if isinstance(d, bytes)]
    decoded: dict = {}
    predicted = predictor.predict_files([io.BytesIO(data[i]) for i in readable], decoded=decoded)
    results = []
    for k, item in enumerate(todo):
        base = {"file": item["label"], "sop_instance_uid": item["sop_instance_uid"],
                "series_instance_uid": item["series"].series_uid}
        if k in readable:
            j = readable.index(k)
            row = {**predicted[j], **base}
            if j in decoded:
                row["_decoded"] = decoded[j]
                row["_source"] = data[k]
        else:
            row = {**base, "error": data[k]}
        results.append(row)
    if store:
        _store(predictor, conn, study_uid, results, method=method, opacity=opacity, report=report)
    for r in results:
        r.pop("_decoded", None)
        r.pop("_source", None)
    return results


def _fetch_all(conn: PacsConnection, study_uid: str, todo: list[dict], progress) -> list:
    """Each instance's Part 10 bytes, or the plain message of why it could not be read. Once the PACS
    cannot be reached, the rest are not tried again (each would wait for the same timeout)."""
    out: list = []
    down: str | None = None
    for k, item in enumerate(todo):
        if down is not None:
            out.append(down)
            continue
        try:
            out.append(conn.fetch_instance(study_uid, item["series"].series_uid, item["sop_instance_uid"]))
        except PacsError as exc:
            out.append(str(exc))
            if "could not be reached" in str(exc) or "did not answer" in str(exc):
                down = f"Not read: {exc}"
        if progress is not None:
            progress(k + 1, len(todo))
    return out


def _store(predictor, conn: PacsConnection, study_uid: str, results: list[dict], *, method: str,
           opacity: float, report: bool) -> None:
    """Build every result's objects, then store them all or none; each result gets ``stored`` or ``store_error``."""
    from medclf_core.io.dicom_header import read_dataset

    todo = [r for r in results if "error" not in r and "_decoded" in r]
    overlays = _overlays(predictor, todo, method, opacity)
    series, objects = WriteSeries(), []
    for r, overlay in zip(todo, overlays, strict=True):
        source = read_dataset(r["_source"], stop_before_pixels=True)
        pdf = _pdf(predictor, r, overlay, opacity) if report else None
        built = build_objects(source, r, predictor.card, series, overlay=overlay["overlay"] if overlay else None,
                              pdf=pdf, method=method)
        r["stored"] = {k: str(built[k].SOPInstanceUID) if k in built else None for k in ("sr", "sc", "pdf")}
        r["verdict"] = verdict_of(r)
        objects.extend(built.values())
    if not objects:
        return
    try:
        store_all_or_nothing(conn, study_uid, objects)
    except PacsError as exc:
        for r in todo:
            r.pop("stored", None)
            r["store_error"] = str(exc)


def _overlays(predictor, todo: list[dict], method: str, opacity: float) -> list[dict | None]:
    """``{"overlay", "heatmap"}`` of each result that is not refused (a refused image gets no heat map), or None
    (also when the model has no heat map)."""
    wanted = [i for i, r in enumerate(todo) if verdict_of(r) != "refused"]
    out: list[dict | None] = [None] * len(todo)
    if not wanted:
        return out
    try:
        maps = predictor.explain([todo[i]["_decoded"] for i in wanted], method, [todo[i]["label"] for i in wanted])
    except Exception:  # noqa: BLE001 - no heat map for this model: the SR is written without its overlay
        return out
    for i, m in zip(wanted, maps, strict=True):
        out[i] = {"overlay": m.overlay(opacity), "heatmap": m.heatmap, "map": m}
    return out


def _pdf(predictor, result: dict, overlay: dict | None, opacity: float) -> bytes | None:
    """The PDF report of one result (identifiers of its header scrubbed), its heat map at the ``opacity`` of the
    overlay stored beside it, or None when it cannot be made."""
    from medclf_core.reports.pdf import report_bytes

    img = result["_decoded"]
    values = list(img.dicom.identifying) if img.dicom is not None else []
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    try:
        return report_bytes(public, img.pixels, overlay["map"] if overlay else None, predictor.card,
                            identifying=values, opacity=opacity)
    except Exception:  # noqa: BLE001 - the SR and overlay are still written; the result says the PDF is missing
        result["report_error"] = "The PDF report could not be made."
        return None
