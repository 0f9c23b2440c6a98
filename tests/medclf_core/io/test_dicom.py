"""DICOM done right: every real sample in ../shared, generated edge cases, no identifier leaks.

Tests over ``../shared/data/dicom_samples`` skip (with the reason) on a fresh clone
without that folder, and per file where no decoder for its transfer syntax is
installed. The generated corpus (``tests/bad_inputs.py``) needs nothing but pydicom.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

import numpy as np
import pytest
from bad_inputs import DICOM_CASES, PATIENT, PATIENT_STRINGS, dicom_bytes, gradient
from helpers import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medclf_core.errors import ImageError
from medclf_core.io.dicom import looks_like_dicom
from medclf_core.io.images import load_image

SHARED_DICOM = REPO.parent / "shared" / "data" / "dicom_samples"


def _shared_files() -> list:
    if not SHARED_DICOM.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{SHARED_DICOM} is absent (fresh clone)"))]
    files = sorted(SHARED_DICOM.rglob("*.dcm"))
    return [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in files]


def _missing_decoder(path) -> str | None:
    """Why the pixel data of ``path`` cannot be decoded here, or None if a decoder is installed."""
    import pydicom
    from pydicom.pixels import get_decoder

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_compressed:
        return None
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"pydicom has no decoder for {syntax.name}"
    return None if decoder.is_available else f"no installed plugin decodes {syntax.name}"


@pytest.mark.parametrize("path", _shared_files())
def test_every_shared_sample_decodes(path):
    reason = _missing_decoder(path)
    if reason:
        with pytest.raises(ImageError, match="no installed decoder"):
            load_image(path)
        pytest.skip(reason)
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    img = load_image(path)
    assert img.source_format == "DICOM" and img.pixels.dtype == np.uint8
    assert img.pixels.std() > 5, "decoded to a (nearly) flat image: windowing is wrong"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        assert any(f"frame {frames // 2 + 1} used" in n for n in img.notes)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        assert any("MONOCHROME1" in n for n in img.notes)
    identifiers = [str(ds.get(k, "")) for k in ("PatientName", "PatientID")]
    for note in img.notes:
        assert not any(s and s in note for s in identifiers)


def test_shared_monochrome1_chest_has_dark_lungs():
    path = SHARED_DICOM / "CR" / "RG1_chest_uncompressed_halfres.dcm"
    if not path.is_file():
        pytest.skip(f"{path} is absent (fresh clone)")
    px = load_image(path).pixels
    h, w = px.shape
    lungs = px[h // 3: 2 * h // 3, w // 5: 2 * w // 5].mean()
    spine = px[h // 3: 2 * h // 3, int(0.47 * w): int(0.53 * w)].mean()
    assert lungs < spine


def test_shared_enhanced_ct_uses_functional_group_window():
    path = SHARED_DICOM / "CT" / "eCT_Supplemental.dcm"
    if not path.is_file():
        pytest.skip(f"{path} is absent (fresh clone)")
    img = load_image(path, frame=0)
    assert any("window" in n for n in img.notes) and any("frame 1 used" in n for n in img.notes)


@pytest.mark.parametrize("case", DICOM_CASES, ids=[c.name for c in DICOM_CASES])
def test_generated_dicom_corpus(case, tmp_path):
    data = case.make()
    path = tmp_path / f"upload{case.suffix}"
    path.write_bytes(data)
    for source in (data, path):
        if case.decodes:
            img = load_image(source)
            assert img.source_format == "DICOM" and img.pixels.dtype == np.uint8
            if case.ndim:
                assert img.pixels.ndim == case.ndim
            if case.note:
                assert any(case.note in n for n in img.notes), img.notes
        else:
            with pytest.raises(ImageError, match=case.error) as info:
                load_image(source)
            assert "\n" not in str(info.value)
            assert not re.search(r"[A-Z]\w*(Error|Exception)\b", str(info.value)), str(info.value)  # plain words


def _ct_with_window(**extra) -> bytes:
    arr = np.zeros((40, 40), np.uint16)
    arr[10:30, 10:30] = 1064  # soft tissue: 40 HU after the -1024 intercept
    arr[18:22, 18:22] = 2024  # bone: 1000 HU
    return dicom_bytes(arr, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024, **extra)


def test_rescale_then_window_gives_soft_tissue_grey():
    px = load_image(_ct_with_window(WindowCenter=40, WindowWidth=400)).pixels
    assert px[0, 0] == 0  # air, far below the window
    assert px[20, 20] == 255  # bone, above it
    assert abs(int(px[12, 12]) - 128) <= 2  # 40 HU is the window centre


def test_multi_valued_window_uses_the_first():
    px = load_image(_ct_with_window(WindowCenter=[40, 500], WindowWidth=[400, 2000])).pixels
    assert abs(int(px[12, 12]) - 128) <= 2


def test_sigmoid_window_function():
    px = load_image(_ct_with_window(WindowCenter=40, WindowWidth=400, VOILUTFunction="SIGMOID")).pixels
    assert abs(int(px[12, 12]) - 128) <= 2 and px[0, 0] < 5


def test_monochrome1_is_the_inverse_of_monochrome2():
    mono2 = load_image(dicom_bytes(gradient(32, 32))).pixels
    mono1 = load_image(dicom_bytes(gradient(32, 32), photometric="MONOCHROME1")).pixels
    assert np.array_equal(mono1, 255 - mono2)


def _moving_dot_frames(n: int = 5) -> np.ndarray:
    frames = np.zeros((n, 16, 16), np.uint8)
    for k in range(n):
        frames[k, 2 + 2 * k, 3] = 255
    return frames


def test_multiframe_picks_middle_or_requested_frame():
    data = dicom_bytes(_moving_dot_frames())
    middle = load_image(data)
    assert np.unravel_index(middle.pixels.argmax(), middle.pixels.shape) == (6, 3)
    assert any("frame 3 used" in n for n in middle.notes)
    first = load_image(data, frame=0)
    assert np.unravel_index(first.pixels.argmax(), first.pixels.shape) == (2, 3)
    assert any("frame 1 used" in n for n in first.notes)
    with pytest.raises(ImageError, match="does not exist; this DICOM has 5 frames"):
        load_image(data, frame=5)


def test_single_frame_refuses_other_frames():
    with pytest.raises(ImageError, match="single frame"):
        load_image(dicom_bytes(gradient(8, 8)), frame=2)


def test_colour_dicom_keeps_its_colours():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 50, 10
    rgb[7, 7] = 0  # not blank (blank images are refused)
    img = load_image(dicom_bytes(rgb, photometric="RGB"))
    assert img.pixels.shape == (8, 8, 3) and tuple(img.pixels[0, 0]) == (200, 50, 10)


def test_no_preamble_and_no_file_meta_decode_like_the_full_file():
    full = load_image(dicom_bytes(gradient(32, 32))).pixels
    for kwargs in ({"preamble": False}, {"file_meta": False}):
        data = dicom_bytes(gradient(32, 32), **kwargs)
        assert looks_like_dicom(data)
        assert np.array_equal(load_image(data).pixels, full)


def test_missing_decoder_message_names_the_package(monkeypatch, dicom_samples):
    """Simulate a machine without pylibjpeg-openjpeg: the message says what to install."""
    import pydicom.pixels

    def no_plugin(*args, **kwargs):
        raise RuntimeError("Unable to decompress 'JPEG 2000' pixel data because all plugins are missing dependencies")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", no_plugin)
    j2k = next(p for p in dicom_samples if "J2K" in p.name)
    with pytest.raises(ImageError, match="install pylibjpeg-openjpeg"):
        load_image(j2k)


def test_committed_jpeg2000_sample_decodes_with_installed_plugin(dicom_samples):
    j2k = next(p for p in dicom_samples if "J2K" in p.name)
    reason = _missing_decoder(j2k)
    if reason:
        pytest.skip(reason)
    assert load_image(j2k).pixels.std() > 5


# ----------------------------------------------------------------------------- identifiers

@pytest.mark.parametrize("case", DICOM_CASES, ids=[c.name for c in DICOM_CASES])
def test_no_identifier_in_messages_notes_logs_or_warnings(case, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            texts = load_image(case.make()).notes
        except ImageError as exc:
            texts = [str(exc)]
    out = capsys.readouterr()
    everything = "\n".join([*texts, caplog.text, out.out, out.err, *(str(w.message) for w in caught)])
    leaked = [s for s in PATIENT_STRINGS if s.lower() in everything.lower()]
    assert not leaked, f"identifiers leaked: {leaked}"


def test_invalid_identifier_values_are_not_echoed_by_pydicom_validation(caplog):
    """pydicom's validation warnings quote the offending value; medclf turns them off."""
    from pydicom import config

    long_name = "Zzyzxqa" * 12  # over the 64-character PN limit: pydicom would warn, quoting it
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        data = dicom_bytes(gradient(16, 16), OtherPatientNames=long_name)
    finally:
        config.settings.writing_validation_mode = previous
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(data)
        from medclf_core.io.deid import identifying_values, read_header, safe_metadata

        ds = read_header(data)
        safe_metadata(ds)
        identifying_values(ds)
    assert "Zzyzxqa" not in caplog.text
    assert not any("Zzyzxqa" in str(w.message) for w in caught)


# ----------------------------------------------------------------------------- property-based

_EXAMPLES = int(os.environ.get("MEDCLF_FUZZ_EXAMPLES", "0"))
_FUZZ = settings(max_examples=_EXAMPLES or 150, derandomize=not _EXAMPLES, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(rows=st.integers(0, 70000), cols=st.integers(0, 70000), frames=st.sampled_from([None, 0, 1, 2, 7, 10**9]),
       bits=st.sampled_from([1, 8, 12, 16, 32, 64, 0, 7]), stored=st.integers(0, 40),
       samples=st.sampled_from([1, 3, 4, 0]), signed=st.sampled_from([0, 1, 2]),
       photometric=st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "PALETTE COLOR", "HSV", ""]),
       payload=st.integers(0, 40000), window=st.sampled_from([None, (40, 400), (0, 0), (1e308, -5)]),
       slope=st.sampled_from([None, 0, 1, -2.5, 1e300]))
def test_fuzz_random_dicom_headers(rows, cols, frames, bits, stored, samples, signed, photometric, payload, window,
                                   slope):
    """Headers that contradict each other or their pixel data: decode or ImageError, nothing else."""
    from pydicom import config

    attrs = {"Rows": rows % 65536, "Columns": cols % 65536, "BitsAllocated": bits, "BitsStored": stored,
             "HighBit": max(stored - 1, 0), "SamplesPerPixel": samples, "PixelRepresentation": signed,
             "PhotometricInterpretation": photometric, "PixelData": bytes(range(256)) * (payload // 256)}
    if frames is not None:
        attrs["NumberOfFrames"] = frames
    if window:
        attrs["WindowCenter"], attrs["WindowWidth"] = window
    if slope is not None:
        attrs["RescaleSlope"], attrs["RescaleIntercept"] = slope, -1024
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        data = dicom_bytes(None, **attrs)
    except Exception:  # noqa: BLE001 - pydicom cannot even write this header: nothing to decode
        return
    finally:
        config.settings.writing_validation_mode = previous
    try:
        img = load_image(data)
    except ImageError as exc:
        assert "\n" not in str(exc)
    else:
        assert img.pixels.dtype == np.uint8 and img.pixels.ndim in (2, 3) and img.pixels.size > 0


def test_bare_data_set_starting_with_any_group_8_element_is_sniffed_as_dicom():
    """Old exports: no preamble, no file meta, no SOP Class UID; the first element is a date."""
    import io

    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.StudyDate = "20240101"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 8, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = gradient(8, 8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    data = buf.getvalue()
    assert data[:4] == b"\x08\x00\x20\x00" and looks_like_dicom(data)
    assert np.array_equal(load_image(data).pixels, load_image(dicom_bytes(gradient(8, 8))).pixels)


# ----------------------------------------------------------------------------- one parse

def test_a_dicom_is_parsed_once_and_its_header_facts_come_with_the_pixels(monkeypatch):
    import pydicom

    calls = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    img = load_image(dicom_bytes(gradient(16, 16), Modality="CR", BodyPartExamined="CHEST"))
    assert len(calls) == 1
    assert img.dicom.metadata["Modality"] == "CR" and img.dicom.metadata["BodyPartExamined"] == "CHEST"
    assert img.dicom.metadata["Rows"] == 16 and img.dicom.metadata["NumberOfFrames"] == 1
    assert PATIENT["PatientName"] in img.dicom.identifying and PATIENT["PatientID"] in img.dicom.identifying
    assert "Zzyzxqa" not in repr(img) and "Zzyzxqa" not in repr(img.dicom)  # no identifier in a log line


def test_header_facts_equal_those_of_reading_the_header_alone():
    from medclf_core.io.deid import identifying_values, read_header, safe_metadata

    for data in (dicom_bytes(gradient(16, 16), Modality="MR"), dicom_bytes(gradient(16, 16), preamble=False),
                 dicom_bytes(np.stack([gradient(16, 16)] * 3))):
        header = read_header(data)
        img = load_image(data)
        assert img.dicom.metadata == safe_metadata(header)
        assert img.dicom.identifying == identifying_values(header)


def test_a_header_that_cannot_be_summarised_leaves_the_image_usable(monkeypatch):
    import medclf_core.io.deid as deid

    def broken(ds):
        raise ValueError("odd header")

    monkeypatch.setattr(deid, "safe_metadata", broken)
    img = load_image(dicom_bytes(gradient(16, 16)))
    assert img.dicom is None and img.pixels.shape == (16, 16)
