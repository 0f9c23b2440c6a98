"""DICOM files for the PACS tests made from the committed chest X-ray JPEGs: a CR, CHEST, MONOCHROME2
instance per JPEG, in a study of its own (or a given one), with a made-up patient (test data only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PATIENT_NAME, PATIENT_ID = "Test^Chest", "MEDCLF-TEST-0001"  # made up: the page must never show them


def chest_dicom(jpeg: Path, out: Path, *, study_uid: str | None = None, series_uid: str | None = None,
                patient_id: str = PATIENT_ID,
                study_date: str = "20240115", instance_number: int = 1) -> dict:
    """Write ``jpeg`` as a DICOM CR file at ``out``; its UIDs ``{"study", "series", "sop"}``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    CRImageStorage = "1.2.840.10008.5.1.4.1.1.1"

    pixels = np.asarray(Image.open(jpeg).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), series_uid or generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = PATIENT_NAME, patient_id, "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = study_date, "101500", "1", "ACC0001"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.BodyPartExamined, ds.SeriesNumber, ds.InstanceNumber = "CR", "CHEST", 1, instance_number
    ds.SeriesDescription = "PA chest"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(out, enforce_file_format=True)
    return {"study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID), "sop": str(ds.SOPInstanceUID)}
