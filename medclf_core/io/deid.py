"""Patient identifiers in DICOM headers: know them, keep them out of sight.

medclf never logs, writes or shows a DICOM header value that could identify a
patient unless the user explicitly asks to see the header. This module holds
the rules:

- :data:`IDENTIFYING_KEYWORDS` / :data:`IDENTIFYING_TAGS`: the attributes of the
  DICOM PS3.15 Annex E *Basic Application Level Confidentiality Profile*
  (names, IDs, dates and times, addresses, institutions, physicians, device
  serial numbers, instance UIDs, free-text comments, ...). Any person-name (PN)
  value and any private (odd-group) element counts as identifying too.
- :func:`identifying_values` lists the identifying strings present in a file, so
  that :func:`redact` can scrub them from any text (a message, a file name).
- :func:`safe_metadata` returns only the non-identifying fields the app shows by
  default (modality, body part, photometric interpretation, size, frames, ...).
- :func:`dicom_facts` gives both of the above as one
  :class:`~medclf_core.io.pixels.DicomFacts`; the DICOM decoder attaches it to the decoded
  image (``DecodedImage.dicom``), so a file is parsed once.
- :func:`deidentify` returns a copy of a dataset without the identifying elements.
- :func:`safe_file_label` is the one rule for a file name shown or written (page, CSV, PDF, messages):
  the file's *own* identifiers (its header's, :func:`file_identifiers` for a file not yet decoded) and
  MRN-like patterns redacted, the same whether the file comes alone or with others;
  :func:`safe_output_name` names the files written for an input (``predict --cam``, ``--report``).
Parsing bytes into a dataset is :mod:`medclf_core.io.dicom_header`'s job; this module builds on it.

Example::

    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName, ds.PatientID, ds.Modality = "DOE^JANE", "MRN12345", "CR"
    >>> safe_metadata(ds)
    {'Modality': 'CR', 'NumberOfFrames': 1}
    >>> redact("failed on Jane Doe (MRN12345)", identifying_values(ds))
    'failed on [redacted] ([redacted])'
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable

from medclf_core.io.dicom_header import AGE_COMPUTED_FROM, header_patient_age, read_header, shown_patient_age
from medclf_core.io.pixels import DicomFacts

REDACTED = "[redacted]"

# DICOM PS3.15 Annex E, Table E.1-1, Basic Profile (attributes to remove, blank or replace).
IDENTIFYING_KEYWORDS = frozenset("""
AccessionNumber AcquisitionComments AcquisitionContextSequence AcquisitionDate AcquisitionDateTime
AcquisitionDeviceProcessingDescription AcquisitionProtocolDescription AcquisitionTime ActualHumanPerformersSequence
AdditionalPatientHistory AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription
AdmittingTime AffectedSOPInstanceUID Allergies Arbitrary AuthorObserverSequence BranchOfService CassetteID
ConfidentialityConstraintOnPatientDataDescription ConsultingPhysicianName ContentCreatorIdentificationCodeSequence
ContentCreatorName ContentDate ContentSequence ContentTime ContrastBolusAgent ContributionDescription
CountryOfResidence CurrentPatientLocation CurveDate CurveTime CustodialOrganizationSequence DataSetTrailingPadding
DateOfLastCalibration DateOfSecondaryCapture DerivationDescription DetectorID DeviceSerialNumber DeviceUID
DigitalSignaturesSequence DischargeDiagnosisDescription DistributionAddress DistributionName EthnicGroup
FrameComments FrameOfReferenceUID GantryID GeneratorID GraphicAnnotationSequence HumanPerformerName
HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments ImagePresentationComments
ImagingServiceRequestComments Impressions InstanceCreationDate InstanceCreationTime InstanceCreatorUID
InstitutionAddress InstitutionCodeSequence InstitutionName InstitutionalDepartmentName
InstitutionalDepartmentTypeCodeSequence InsurancePlanIdentification
IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence InterpretationAuthor
InterpretationDiagnosisDescription InterpretationIDIssuer InterpretationRecorder InterpretationText
InterpretationTranscriber IrradiationEventUID IssuerOfAdmissionID IssuerOfPatientID IssuerOfServiceEpisodeID
LastMenstrualDate MAC MediaStorageSOPInstanceUID MedicalAlerts MedicalRecordLocator MilitaryRank
ModifiedAttributesSequence ModifiedImageDescription ModifyingDeviceID NameOfPhysiciansReadingStudy
NamesOfIntendedRecipientsOfResults Occupation OperatorIdentificationSequence OperatorsName
OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation OriginalAttributesSequence OtherPatientIDs
OtherPatientIDsSequence OtherPatientNames OverlayDate OverlayTime ParticipantSequence PatientAddress PatientAge
PatientBirthDate PatientBirthName PatientBirthTime PatientComments PatientID PatientInstitutionResidence
PatientInsurancePlanCodeSequence PatientMotherBirthName PatientName PatientPrimaryLanguageCodeSequence
PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSex PatientSexNeutered PatientSize
PatientState PatientTelephoneNumbers PatientTransportArrangements PatientWeight PerformedLocation
PerformedProcedureStepDescription PerformedProcedureStepEndDate PerformedProcedureStepEndTime
PerformedProcedureStepID PerformedProcedureStepStartDate PerformedProcedureStepStartTime PerformedStationAETitle
PerformedStationGeographicLocationCodeSequence PerformedStationName PerformedStationNameCodeSequence
PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence
PersonName PersonTelephoneNumbers PhysicianApprovingInterpretation PhysiciansOfRecord
PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
PlacerOrderNumberImagingServiceRequest PreMedication PregnancyStatus ProtocolName ReasonForStudy
ReasonForTheImagingServiceRequest ReferencedDigitalSignatureSequence ReferencedFrameOfReferenceUID
ReferencedImageSequence ReferencedPatientAliasSequence ReferencedPatientSequence
ReferencedPerformedProcedureStepSequence ReferencedSOPInstanceMACSequence ReferencedSOPInstanceUID
ReferencedStudySequence ReferringPhysicianAddress ReferringPhysicianIdentificationSequence ReferringPhysicianName
ReferringPhysicianTelephoneNumbers RegionOfResidence RelatedFrameOfReferenceUID RequestAttributesSequence
RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription RequestedProcedureID
RequestedProcedureLocation RequestedSOPInstanceUID RequestingPhysician RequestingService ResponsibleOrganization
ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsIDIssuer ReviewerName
ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName ScheduledProcedureStepDescription
ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime ScheduledProcedureStepLocation
ScheduledProcedureStepStartDate ScheduledProcedureStepStartTime ScheduledStationAETitle
ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStationNameCodeSequence
ScheduledStudyLocation ScheduledStudyLocationAETitle SeriesDate SeriesDescription SeriesInstanceUID SeriesTime
ServiceEpisodeDescription ServiceEpisodeID SmokingStatus SOPInstanceUID SourceImageSequence SpecialNeeds
StationName StorageMediaFileSetUID StudyComments StudyDate StudyDescription StudyID StudyIDIssuer
StudyInstanceUID StudyTime SynchronizationFrameOfReferenceUID TextComments TextString TimezoneOffsetFromUTC
TopicAuthor TopicKeywords TopicSubject TopicTitle TransactionUID UID VerifyingObserverIdentificationCodeSequence
VerifyingObserverName VerifyingObserverSequence VerifyingOrganization VisitComments
""".split())

# Shown by default: describe the image, never the patient, the place or the time. ImageType to
# DiffusionDirectionality are read by trust.mr_sequence (DWI, ADC, angiography ...).
SAFE_DISPLAY_KEYWORDS = ("Modality", "BodyPartExamined", "ViewPosition", "ImageLaterality", "Laterality",
                         "PhotometricInterpretation", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel",
                         "BitsStored", "PixelSpacing", "SliceThickness", "Manufacturer", "SOPClassUID",
                         "ImageType", "AngioFlag", "DiffusionBValue", "DiffusionDirectionality")

_MIN_REDACT_LENGTH = 3  # shorter fragments ("M", "02") would scrub ordinary words and numbers


def _tags_for(keywords: Iterable[str]) -> frozenset[int]:
    from pydicom.datadict import tag_for_keyword

    return frozenset(t for t in (tag_for_keyword(k) for k in keywords) if t is not None)


IDENTIFYING_TAGS = _tags_for(IDENTIFYING_KEYWORDS)


def dicom_facts(ds) -> DicomFacts | None:
    """The display fields (:func:`safe_metadata`) and identifying values (:func:`identifying_values`)
    of a parsed dataset, or None when its header cannot be summarised (the pixels may still be fine).

    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName, ds.Modality = "DOE^JANE", "MR"
    >>> facts = dicom_facts(ds)
    >>> facts.metadata, facts.identifying
    ({'Modality': 'MR', 'NumberOfFrames': 1}, ['DOE JANE', 'DOE^JANE', 'JANE DOE', 'JANE', 'DOE'])
    >>> facts  # the identifiers stay out of any log line
    DicomFacts(metadata={'Modality': 'MR', 'NumberOfFrames': 1})
    """
    try:
        return DicomFacts(safe_metadata(ds), identifying_values(ds))
    except Exception:  # noqa: BLE001 - a header we cannot summarise must not refuse the image
        return None


def is_identifying(elem) -> bool:
    """True for Annex E attributes, any person name (VR PN), and any private element."""
    return int(elem.tag) in IDENTIFYING_TAGS or elem.VR == "PN" or elem.tag.is_private


def identifying_values(ds) -> list[str]:
    """Every identifying string in ``ds`` (its file meta and nested sequences included),
    with person names also split into their parts, longest first and without duplicates."""
    found: set[str] = set()
    for elem in _walk(ds):
        if is_identifying(elem):
            found.update(_strings(elem))
    return sorted((v for v in found if len(v) >= _MIN_REDACT_LENGTH), key=lambda v: (-len(v), v))


def _walk(ds):
    """All elements of a dataset, recursively; an identifying sequence yields its items' elements as identifying."""
    meta = getattr(ds, "file_meta", None)
    datasets = [meta, ds] if meta is not None else [ds]
    for d in datasets:
        yield from _walk_one(d)


# The parts of a coded entry that are standard vocabulary, never a patient's data: the scheme ("DCM",
# "SCT"), the code ("121320") and its version. Inside an identifying sequence they stay unmarked, or
# "DCM" would be scrubbed from every ".dcm" and "dcm_" in a file name.
_CODE_KEYWORDS = frozenset({"CodingSchemeDesignator", "CodingSchemeVersion", "CodeValue", "LongCodeValue",
                            "URNCodeValue", "ContextIdentifier", "MappingResource", "ContextGroupVersion"})


def _walk_one(ds, inherited: bool = False):
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                for inner in _walk_one(item, inherited or is_identifying(elem)):
                    yield inner
        elif inherited and getattr(elem, "keyword", "") not in _CODE_KEYWORDS:
            yield _Marked(elem)
        else:
            yield elem


class _Marked:
    """An element inside an identifying sequence: identifying whatever its own tag."""

    def __init__(self, elem):
        self.tag, self.VR, self.value = elem.tag, "PN", elem.value


def _strings(elem) -> set[str]:
    value = elem.value
    if value is None or isinstance(value, bytes | bytearray):
        return set()
    values = list(value) if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
    out: set[str] = set()
    for v in values:
        text = str(v).strip()
        if not text:
            continue
        out.add(text)
        if elem.VR == "PN" or "^" in text:
            parts = [p.strip() for p in re.split(r"[\^=]", text) if p.strip()]
            out.update(parts)
            out.add(" ".join(parts))
            if len(parts) >= 2:
                out.add(f"{parts[1]} {parts[0]}")  # "Jane Doe" for "Doe^Jane"
    return out


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with every identifying value (case-insensitive) replaced by ``[redacted]``.

    ``values`` is typically :func:`identifying_values` of the file the text is about.
    """
    out = str(text)
    for value in sorted(set(values), key=len, reverse=True):
        if len(value) >= _MIN_REDACT_LENGTH:
            out = re.sub(re.escape(value), REDACTED, out, flags=re.IGNORECASE)
    return out


def safe_metadata(source) -> dict:
    """Non-identifying fields for display: modality, body part, photometric
    interpretation, size, frames, transfer syntax, ... (absent fields left out).

    ``source`` is a pydicom Dataset, or a path / bytes / upload of a DICOM file.
    """
    ds = source if _is_dataset(source) else read_header(source)
    out: dict = {}
    for keyword in SAFE_DISPLAY_KEYWORDS:
        if keyword in ds:
            out[keyword] = _plain(ds[keyword].value)
    out.setdefault("NumberOfFrames", 1)
    age, computed_from = header_patient_age(ds)
    age = shown_patient_age(age)
    if age:  # for the card's age range (trust.population.age_reason); over 89 years it reads "090Y"
        out["PatientAge"] = age
        if computed_from:  # no PatientAge: from the birth date and study date, which are not carried
            out[AGE_COMPUTED_FROM] = computed_from
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax:
        out["TransferSyntax"] = str(getattr(syntax, "name", "") or syntax)
    if "SOPClassUID" in out:
        out["SOPClass"] = str(getattr(ds.SOPClassUID, "name", "") or out["SOPClassUID"])
        del out["SOPClassUID"]
    return out


def deidentify(ds):
    """A deep copy of ``ds`` with every identifying element removed (also in sequences
    and the file meta), and private elements dropped. The original is unchanged."""
    clean = copy.deepcopy(ds)
    _strip(clean)
    meta = getattr(clean, "file_meta", None)
    if meta is not None:
        _strip(meta)
    return clean


def _strip(ds) -> None:
    for elem in list(ds):
        if is_identifying(elem):
            del ds[elem.tag]
        elif elem.VR == "SQ":
            for item in elem.value or []:
                _strip(item)


# MRN-like tokens in a file name, whatever the header says: "MRN-9988776655", "mrn_12345", "PatientID 0042"
# (an ID word and at least three digits), and any run of 7 or more digits (record numbers, phone numbers, dates such as 19230405).
_ID_WORDS = r"(?:mrn|pid|patid|patient[-_ ]?id|acc(?:ession)?(?:[-_ ]?(?:no|nr|num(?:ber)?))?)"
_MRN_TOKEN = re.compile(rf"(?i)(?<![a-z0-9]){_ID_WORDS}[-_ #:.=]*[a-z]*\d{{3,}}[a-z0-9]*(?![a-z0-9])")
_LONG_DIGITS = re.compile(r"(?<!\d)\d{7,}(?!\d)")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")
# Header values shorter than this are not searched for in file names when they hold a digit: short
# codes such as "RG1", "CT2" or "V01" name files everywhere and would scrub ordinary names.
_MIN_CODE_LENGTH = 4


def safe_file_label(path: str | os.PathLike, values: Iterable[str] = ()) -> str:
    """The one rule for showing or exporting a file name: its base name (no folders, ``/`` or ``\\``),
    with identifiers replaced by ``[redacted]`` and nothing else changed.

    Identifiers are (1) the header's identifying ``values`` (see :func:`identifying_values`), found
    as whole words (between separators such as ``_ - . space``, case-insensitive; a multi-word value
    with any separators), and (2) MRN-like tokens: ``MRN``/``PID``/``PatientID``/accession-number
    prefixes followed by a number, and runs of 7 or more digits. The extension is never touched, nor
    is a value inside a longer word ("RG" in "RG1_J2KI"), nor a short code with a digit ("RG1").

    Example: ``safe_file_label("/up/Zzyzxqa_Quintessa_MRN-9988776655.dcm", ["Zzyzxqa", "Quintessa"])``
    is ``"[redacted]_[redacted]_[redacted].dcm"``; ``safe_file_label("RG1_J2KI.dcm", ["RG1", "DCM"])``
    is ``"RG1_J2KI.dcm"``.
    """
    name = re.split(r"[\\/]", str(path))[-1]
    ext_match = _EXTENSION.search(name)
    stem, ext = (name[:ext_match.start()], ext_match.group()) if ext_match and ext_match.start() > 0 else (name, "")
    for value in sorted({str(v).strip() for v in values}, key=len, reverse=True):
        words = [w for w in re.split(r"[^0-9A-Za-z]+", value) if w]
        if not words:
            continue
        joined = "".join(words)
        if len(joined) < _MIN_REDACT_LENGTH or (len(joined) < _MIN_CODE_LENGTH and any(c.isdigit() for c in joined)):
            continue
        pattern = r"[^0-9A-Za-z]+".join(re.escape(w) for w in words)
        stem = re.sub(rf"(?i)(?<![0-9A-Za-z]){pattern}(?![0-9A-Za-z])", REDACTED, stem)
    stem = _MRN_TOKEN.sub(REDACTED, stem)
    stem = _LONG_DIGITS.sub(REDACTED, stem)
    return stem + ext


def safe_file_stem(path: str | os.PathLike, values: Iterable[str] = ()) -> str:
    """:func:`safe_file_label` without its extension, reduced to what a file name may hold everywhere
    (letters, digits, ``.``, ``_`` and ``-``): the part of an output file's name that comes from an input.

    >>> safe_file_stem("/up/001_Zzyzxqa_Quintessa_MRN-9988776655_19230405.dcm", ["Zzyzxqa^Quintessa"])
    '001_redacted_redacted_redacted'
    """
    label = safe_file_label(path, values)
    ext = _EXTENSION.search(label)
    stem = label[:ext.start()] if ext and ext.start() > 0 else label
    stem = stem.replace(REDACTED, "redacted")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "image"


def safe_output_name(path: str | os.PathLike, values: Iterable[str] = (), *, index: int | None = None,
                     suffix: str = "") -> str:
    """The name of a file written for the input ``path`` (a heat map, a report): ``<index>_<safe stem><suffix>``,
    the index (3 digits) telling outputs apart when redaction makes two stems alike.

    >>> safe_output_name("scans/Doe_Jane_MRN-1234567.dcm", ["Doe^Jane"], index=1, suffix="_cam.png")
    '001_redacted_redacted_cam.png'
    """
    return (f"{index:03d}_" if index is not None else "") + safe_file_stem(path, values) + suffix


def file_identifiers(path: str | os.PathLike) -> list[str]:
    """The identifying values (:func:`identifying_values`) of the DICOM file at ``path``, read from its
    header alone; ``[]`` for any other file, or a header that cannot be read. For a file the caller has not
    decoded (a decoded DICOM carries them already: ``DecodedImage.dicom.identifying``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        if head[128:132] != b"DICM" and not str(path).lower().endswith((".dcm", ".dicom")):
            return []
        return identifying_values(read_header(path))
    except Exception:  # noqa: BLE001 - an unreadable header names no identifier; the name patterns still apply
        return []


def _is_dataset(obj) -> bool:
    from pydicom.dataset import Dataset

    return isinstance(obj, Dataset)


def _plain(value):
    """JSON-friendly form of a pydicom value (numbers stay numbers, multi-values become lists)."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if type(value).__name__ in ("DSfloat", "DSdecimal"):
        return float(value)
    if type(value).__name__ == "IS":
        return int(value)
    if isinstance(value, int | float):
        return value
    return str(value)
