"""Results back into the PACS as DICOM objects (``highdicom``: no dataset is built by hand), all or nothing.

For one source instance and its result (a row of ``Predictor.predict_files``):

- a **Comprehensive SR** (:func:`build_sr`): the verdict (``finding``, ``unfamiliar`` or ``refused: not this
  kind of image``), and unless refused the decided class, the headline the page shows (decision with
  P(positive class), borderline), that probability with the class it is of, and the operating threshold; the model's
  name, version, card fingerprint, the calibration in use (the card's, or a site's: its name) and intended use;
  "research use only"; a reference to the source image. Its series description names a site calibration too,
  so two SRs of one image made with different calibrations are told apart.
  A refused image's SR carries no class and no probability: it is never a finding;
- a **Secondary Capture** of the heat-map overlay (:func:`build_overlay_sc`), labelled as such, with
  "NOT FOR DIAGNOSIS" burned into the pixels (none for a refused image);
- optionally the PDF report as **Encapsulated PDF** (:func:`build_pdf`).

Each kind goes into its own new series of the source's study (:class:`WriteSeries`: fresh UIDs, one series
per kind for a whole run). :func:`store_all_or_nothing` sends them with STOW-RS and, when a write fails half
way, removes what was stored, so no partial series is left (or says plainly when it could not).
:func:`sr_fields` reads an SR back as ``{concept name: value}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from medclf_core import __version__
from medclf_core.inference.results import headline
from medclf_core.pacs.client import PacsConnection, PacsError
from medclf_core.registry.card_reading import finding_mimics

MANUFACTURER = "medclf"
RESEARCH_NOTICE = "Research use only. Not for clinical use: not a diagnosis."
REFUSED_TEXT = "refused: not this kind of image"
BURNED_IN = "NOT FOR DIAGNOSIS"
SCHEME = "99MEDCLF"  # private coding scheme for the concepts DICOM has no code for
STORE_CHUNK = 16  # datasets per STOW-RS request
_SERIES = {"sr": (9101, "medclf result (SR, research use only)"),
           "sc": (9102, "medclf heat-map overlay (not for diagnosis)"),
           "pdf": (9103, "medclf PDF report (research use only)")}


@dataclass
class WriteSeries:
    """The new series one run writes into a study: one per kind (``sr``, ``sc``, ``pdf``), fresh UIDs."""
    uids: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def next(self, kind: str) -> tuple[str, int, str, int]:
        """``(series UID, series number, new SOP Instance UID, instance number)`` of the next object of ``kind``."""
        from highdicom import UID

        if kind not in self.uids:
            self.uids[kind] = str(UID())
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return self.uids[kind], _SERIES[kind][0], str(UID()), self.counts[kind]


def verdict_of(result: Mapping) -> str:
    """``refused`` (the gate flagged it: no finding), ``unfamiliar`` (a finding with a caution) or ``finding``."""
    if result.get("ood") is True:
        return "refused"
    return "unfamiliar" if result.get("unfamiliar") else "finding"


def card_fingerprint(card: Mapping) -> str:
    """sha256 (first 16 hex digits) of the card's content, without where it lies on disk."""
    content = {k: v for k, v in dict(card).items() if k != "run_dir"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_version(card: Mapping) -> str:
    return str(card.get("version") or card.get("created") or "unrecorded")


def intended_use_text(card: Mapping) -> str:
    """The card's intended use in one text: its summary as a sentence, then the modalities and body parts.

    >>> intended_use_text({"intended_use": {"summary": "Chest X-rays (any hospital).", "modalities": ["CR"]}})
    'Chest X-rays (any hospital). Modalities: CR.'
    """
    use = card.get("intended_use") if isinstance(card.get("intended_use"), Mapping) else {}
    summary = str(use.get("summary") or "").strip()
    lists = "; ".join(f"{label}: {', '.join(map(str, use[key]))}"
                      for key, label in (("modalities", "modalities"), ("body_parts", "body parts")) if use.get(key))
    if summary and lists:
        return f"{summary if summary.endswith(('.', '!', '?')) else summary + '.'} {lists[0].upper()}{lists[1:]}."
    return summary or lists or "not stated on the model card"


def calibration_words(card: Mapping) -> str:
    """Which calibration made the probabilities, as the PDF report says it
    (:func:`~medclf_core.trust.calibration.calibration_in_use`): the card's, or a site's with its name."""
    from medclf_core.trust.calibration import calibration_in_use

    site = _site_name(card)
    return f"{'site ' + site if site else 'model card'}: {calibration_in_use(card)}"


def _site_name(card: Mapping) -> str | None:
    site = card.get("site_calibration")
    return str(site["site"]) if isinstance(site, Mapping) and site.get("site") else None


def series_description(kind: str, card: Mapping) -> str:
    """The description of the new series of ``kind``; the SR's names the calibration in use (DICOM: at most
    64 characters)."""
    text = _SERIES[kind][1]
    if kind == "sr":
        site = _site_name(card)
        text = text.replace("(SR, ", f"(SR, site {site}, " if site else "(SR, card calibration, ")
    return text if len(text) <= 64 else text[:63] + "…"


def _code(value: str, meaning: str, scheme: str = SCHEME):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _text(name, value: str):
    from highdicom.sr import RelationshipTypeValues, TextContentItem

    return TextContentItem(name=name, value=str(value)[:1024], relationship_type=RelationshipTypeValues.CONTAINS)


def _num(name, value: float):
    from highdicom.sr import NumContentItem, RelationshipTypeValues

    return NumContentItem(name=name, value=float(value), unit=_code("1", "no units", "UCUM"),
                          relationship_type=RelationshipTypeValues.CONTAINS)


def _finding_items(result: Mapping, verdict: str, card: Mapping) -> list:
    """The verdict, and unless refused: the decided class, the headline (:func:`~medclf_core.inference.results.headline`:
    the decision with P(positive class) for a thresholded model, capped at ">99%" / "<1%", and "borderline"),
    that probability exactly with the class it is of, borderline yes/no, the threshold (with its class), and under
    a finding the card's known mimics (:func:`~medclf_core.registry.card_reading.finding_mimics`)."""
    items = [_text(_code("VERDICT", "Verdict"), REFUSED_TEXT if verdict == "refused" else verdict)]
    if verdict == "refused":
        items.append(_text(_code("REASON", "Reason"), result.get("ood_reason") or "the out-of-distribution gate"))
        return items
    head = headline(result)  # the decision with P(positive class), as the page, the CLI and the PDF give it
    items.append(_text(_code("121071", "Finding", "DCM"), str(result["label"])))
    items.append(_text(_code("HEADLINE", "Headline"), head.title))
    items.append(_num(_code("PROB", "Probability"), head.probability))  # exact here; the headline caps it
    items.append(_text(_code("PROBCLASS", "Probability class"), head.shown_class))
    items.append(_text(_code("BORDERLINE", "Borderline"), "yes" if head.borderline else "no"))
    if result.get("threshold") is not None:
        items.append(_num(_code("THRESH", "Operating threshold"), result["threshold"]))
        items.append(_text(_code("THRCLASS", "Threshold class"), result.get("positive_class") or ""))
    if verdict == "unfamiliar":
        items.append(_text(_code("CAUTION", "Caution"), result.get("unfamiliar_reason")
                           or "unlike this model's training images"))
    if head.finding and (mimics := finding_mimics(card)):
        items.append(_text(_code("MIMICS", "Known limit of this model"), mimics))
    return items


def build_sr(source, result: Mapping, card: Mapping, series: WriteSeries):
    """The Comprehensive SR of one result (see the module docstring); ``source``: the source instance's header."""
    from highdicom.sr import (ComprehensiveSR, ContainerContentItem, ImageContentItem,
                              RelationshipTypeValues)

    verdict = verdict_of(result)
    root = ContainerContentItem(name=_code("RESULT", "medclf classification result"))
    root.ContentSequence = [
        *_finding_items(result, verdict, card),
        _text(_code("111001", "Algorithm Name", "DCM"), card.get("name") or "unnamed"),
        _text(_code("111003", "Algorithm Version", "DCM"), model_version(card)),
        _text(_code("CARDFP", "Model card fingerprint"), card_fingerprint(card)),
        _text(_code("CALIB", "Calibration in use"), calibration_words(card)),
        _text(_code("USE", "Intended use"), intended_use_text(card)),
        _text(_code("NOTICE", "Notice"), RESEARCH_NOTICE),
        ImageContentItem(name=_code("121112", "Source of Measurement", "DCM"),
                         referenced_sop_class_uid=source.SOPClassUID,
                         referenced_sop_instance_uid=source.SOPInstanceUID,
                         relationship_type=RelationshipTypeValues.CONTAINS),
    ]
    series_uid, series_number, sop_uid, number = series.next("sr")
    return ComprehensiveSR(evidence=[source], content=root, series_instance_uid=series_uid,
                           series_number=series_number, sop_instance_uid=sop_uid, instance_number=number,
                           manufacturer=MANUFACTURER, series_description=series_description("sr", card),
                           manufacturer_model_name=str(card.get("name") or "medclf")[:64],
                           software_versions=f"medclf {__version__}")


def burn_in(overlay: np.ndarray, text: str = BURNED_IN, min_width: int = 512) -> np.ndarray:
    """The RGB overlay (enlarged to at least ``min_width`` pixels wide) with ``text`` on a black band at the top."""
    import cv2

    img = np.ascontiguousarray(overlay[..., :3] if overlay.ndim == 3 else np.repeat(overlay[..., None], 3, 2),
                               dtype=np.uint8)
    if img.shape[1] < min_width:
        scale = min_width / img.shape[1]
        img = cv2.resize(img, (min_width, max(1, round(img.shape[0] * scale))), interpolation=cv2.INTER_NEAREST)
    h, w = img.shape[:2]
    band = max(24, h // 14)
    img[:band] = 0
    font_scale = band / 40.0
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 2)
    cv2.putText(img, text, (max(2, (w - tw) // 2), (band + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                (255, 255, 255), 2, cv2.LINE_AA)
    return img


def build_overlay_sc(source, overlay: np.ndarray, result: Mapping, card: Mapping, series: WriteSeries,
                     method: str = "gradcam"):
    """The Secondary Capture of the heat-map overlay (RGB uint8), "NOT FOR DIAGNOSIS" burned in."""
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset

    series_uid, series_number, sop_uid, number = series.next("sc")
    sc = SCImage.from_ref_dataset(source, burn_in(overlay), photometric_interpretation="RGB", bits_allocated=8,
                                  coordinate_system="PATIENT", patient_orientation=("L", "F"),
                                  series_instance_uid=series_uid,
                                  series_number=series_number, sop_instance_uid=sop_uid, instance_number=number,
                                  manufacturer=MANUFACTURER, series_description=_SERIES["sc"][1],
                                  manufacturer_model_name=str(card.get("name") or "medclf")[:64],
                                  software_versions=f"medclf {__version__}")
    # the overlay's orientation is the source's; highdicom asks for one, so the placeholder is replaced here
    # by the source's own value, or left empty (type 2: unknown) rather than guessed
    orientation = list(getattr(source, "PatientOrientation", None) or [])
    sc.PatientOrientation = orientation if len(orientation) == 2 else ""
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = (f"Heat map ({method}) of the class {result.get('label')}: where the model looked. "
                        f"{BURNED_IN}. {RESEARCH_NOTICE}")[:10240]
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    return sc


def build_pdf(source, pdf: bytes, card: Mapping, series: WriteSeries):
    """The PDF report as an Encapsulated PDF instance (highdicom's SOP class base for the common modules)."""
    from highdicom.base import SOPClass
    from pydicom.dataset import Dataset

    series_uid, series_number, sop_uid, number = series.next("pdf")
    doc = SOPClass(study_instance_uid=source.StudyInstanceUID, series_instance_uid=series_uid,
                   series_number=series_number, sop_instance_uid=sop_uid,
                   sop_class_uid="1.2.840.10008.5.1.4.1.1.104.1", instance_number=number, modality="DOC",
                   manufacturer=MANUFACTURER, transfer_syntax_uid="1.2.840.10008.1.2.1",
                   series_description=_SERIES["pdf"][1], software_versions=f"medclf {__version__}",
                   **_patient_and_study(source))
    doc.DocumentTitle = "medclf report (research use only)"
    doc.MIMETypeOfEncapsulatedDocument = "application/pdf"
    doc.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    doc.EncapsulatedDocumentLength = len(pdf)
    doc.BurnedInAnnotation = "YES"
    doc.ConceptNameCodeSequence = []
    doc.AcquisitionDateTime = ""
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    doc.SourceInstanceSequence = [ref]
    return doc


def _patient_and_study(source) -> dict:
    keys = {"patient_id": "PatientID", "patient_name": "PatientName", "patient_birth_date": "PatientBirthDate",
            "patient_sex": "PatientSex", "accession_number": "AccessionNumber", "study_id": "StudyID",
            "study_date": "StudyDate", "study_time": "StudyTime", "referring_physician_name": "ReferringPhysicianName"}
    return {arg: getattr(source, kw) or None for arg, kw in keys.items() if getattr(source, kw, None)}


def build_objects(source, result: Mapping, card: Mapping, series: WriteSeries, *, overlay: np.ndarray | None = None,
                  pdf: bytes | None = None, method: str = "gradcam") -> dict:
    """``{"sr": Dataset, "sc": Dataset or absent, "pdf": Dataset or absent}`` of one result: no overlay for a
    refused image (its heat map would explain a finding it does not have)."""
    import warnings

    with warnings.catch_warnings():  # highdicom's remarks on the source's own person names: nothing to act on
        warnings.simplefilter("ignore", UserWarning)
        out = {"sr": build_sr(source, result, card, series)}
        if overlay is not None and verdict_of(result) != "refused":
            out["sc"] = build_overlay_sc(source, overlay, result, card, series, method)
        if pdf:
            out["pdf"] = build_pdf(source, pdf, card, series)
    return out


def store_all_or_nothing(conn: PacsConnection, study_uid: str, datasets: Sequence) -> list[str]:
    """STOW-RS every dataset (in chunks); what the PACS reports as failed is sent once more. When anything is
    still missing, or the PACS stops answering half way, every object this call may have stored is removed
    and a :class:`PacsError` says so (or says plainly that some could not be removed)."""
    sent: list = []
    try:
        for start in range(0, len(datasets), STORE_CHUNK):
            chunk = list(datasets[start:start + STORE_CHUNK])
            sent.extend(chunk)
            failed = set(conn.store(chunk, study_uid))
            if failed:
                failed = set(conn.store([d for d in chunk if str(d.SOPInstanceUID) in failed], study_uid))
            if failed:
                raise PacsError(f"The PACS at {conn.where} refused {len(failed)} of the result objects.")
    except PacsError as exc:
        left = _roll_back(conn, sent)
        raise PacsError(f"Writing the results back failed: {exc} {_rollback_words(sent, left)}") from None
    return [str(d.SOPInstanceUID) for d in datasets]


def _rollback_words(sent: Sequence, left: int) -> str:
    """What a failed write left in the PACS, naming every series that was being written."""
    if not left:
        return "Nothing was left in the PACS: no result was stored."
    names = list(dict.fromkeys(str(getattr(d, "SeriesDescription", "") or "") for d in sent))
    quoted = [f"'{n}'" for n in names if n] or ["'medclf ...'"]
    named = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return (f"Up to {left} object(s) may have been stored and could not be removed (the PACS stopped answering): "
            f"look in the study for incomplete series named {named}, and remove them.")


def _roll_back(conn: PacsConnection, sent: Sequence) -> int:
    """Remove every dataset of ``sent`` from the PACS; how many could not be removed."""
    left = 0
    for d in sent:
        try:
            conn.delete_instance(str(d.StudyInstanceUID), str(d.SeriesInstanceUID), str(d.SOPInstanceUID))
        except PacsError:
            left += 1
    return left


def write_results(conn: PacsConnection, source, result: Mapping, card: Mapping, *, overlay: np.ndarray | None = None,
                  pdf: bytes | None = None, series: WriteSeries | None = None, method: str = "gradcam") -> dict:
    """Write one result back (``source``: the instance's Part 10 bytes or header Dataset); ``{"sr": uid,
    "sc": uid or None, "pdf": uid or None, "series": {kind: series UID}}``. All or nothing."""
    if isinstance(source, bytes | bytearray):
        from medclf_core.io.dicom_header import read_dataset

        source = read_dataset(bytes(source), stop_before_pixels=True)
    series = series or WriteSeries()
    objects = build_objects(source, result, card, series, overlay=overlay, pdf=pdf, method=method)
    store_all_or_nothing(conn, str(source.StudyInstanceUID), list(objects.values()))
    return {"sr": str(objects["sr"].SOPInstanceUID),
            **{k: str(objects[k].SOPInstanceUID) if k in objects else None for k in ("sc", "pdf")},
            "series": {k: str(v.SeriesInstanceUID) for k, v in objects.items()}}


def sr_fields(ds) -> dict:
    """An SR read back, as ``{concept meaning: value}`` (text, number, or the referenced SOP Instance UID)."""
    out = {}
    for item in ds.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        kind = item.ValueType
        if kind == "TEXT":
            out[name] = str(item.TextValue)
        elif kind == "NUM":
            out[name] = float(item.MeasuredValueSequence[0].NumericValue)
        elif kind == "IMAGE":
            out[name] = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return out
