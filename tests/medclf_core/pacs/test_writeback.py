"""Results written back into a real Orthanc and read back over DICOMweb: every SR field, the overlay's label
and burned-in notice, the PDF, the UIDs and references; a refused image's SR; a write that fails half way."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medclf_core.inference.results import headline
from medclf_core.pacs import writeback
from medclf_core.pacs.client import PacsConnection, PacsError
from medclf_core.pacs.flow import predict_from_pacs


def _study_of(paths, prefix):
    ds = pydicom.dcmread(next(p for p in paths if p.name.startswith(prefix)), stop_before_pixels=True)
    return ds


def _read(conn, study, sop):
    """An instance read back over DICOMweb (QIDO to find its series, WADO-RS to fetch it)."""
    for s in conn.list_series(study):
        if sop in conn.list_instances(study, s.series_uid):
            return conn.client.retrieve_instance(study, s.series_uid, sop)
    raise AssertionError("not stored")


def test_sr_overlay_and_pdf_read_back_with_every_field(orthanc, dicom_samples, tiny_predictor):
    src = _study_of(dicom_samples, "CR_")
    conn = PacsConnection.from_env(orthanc.url)
    (r,) = predict_from_pacs(tiny_predictor, conn, src.StudyInstanceUID, store=True, report=True)
    assert r["sop_instance_uid"] == src.SOPInstanceUID and r["verdict"] == "finding" and "store_error" not in r
    sr = _read(conn, src.StudyInstanceUID, r["stored"]["sr"])
    fields = writeback.sr_fields(sr)
    card = tiny_predictor.card
    assert fields["Verdict"] == "finding" and fields["Finding"] == r["label"]
    assert fields["Probability class"] == "PNEUMONIA"  # P(positive class), whichever class was decided
    assert fields["Probability"] == pytest.approx(r["probabilities"]["PNEUMONIA"], abs=1e-9)
    assert fields["Headline"] == headline(r).title and fields["Headline"].startswith(f"{r['label']} (P(PNEUMONIA)")
    assert fields["Borderline"] == ("yes" if headline(r).borderline else "no")
    assert fields["Operating threshold"] == 0.5 and fields["Threshold class"] == "PNEUMONIA"
    assert (fields["Algorithm Name"], fields["Algorithm Version"]) == ("tiny-chest", card["created"])
    assert fields["Model card fingerprint"] == writeback.card_fingerprint(card)
    assert "CR, DX" in fields["Intended use"] and "CHEST" in fields["Intended use"]
    assert "Research use only" in fields["Notice"]
    assert fields["Source of Measurement"] == src.SOPInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == src.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    sc = _read(conn, src.StudyInstanceUID, r["stored"]["sc"])
    pdf = _read(conn, src.StudyInstanceUID, r["stored"]["pdf"])
    for obj, modality in ((sr, "SR"), (sc, "OT"), (pdf, "DOC")):  # same study and patient, a new series each
        assert obj.StudyInstanceUID == src.StudyInstanceUID and obj.PatientID == src.PatientID
        assert obj.Modality == modality and obj.SeriesInstanceUID != src.SeriesInstanceUID
    assert len({sr.SeriesInstanceUID, sc.SeriesInstanceUID, pdf.SeriesInstanceUID}) == 3
    assert sc.BurnedInAnnotation == "YES" and "not for diagnosis" in sc.SeriesDescription
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    band = sc.pixel_array[: max(24, sc.Rows // 14)]
    assert (band == 255).any() and (band == 0).mean() > 0.5  # white letters on a black band
    assert pdf.MIMETypeOfEncapsulatedDocument == "application/pdf" and bytes(pdf.EncapsulatedDocument[:5]) == b"%PDF-"
    assert pdf.SourceInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID


def test_a_refused_instance_gets_an_sr_that_says_refused_and_no_finding(orthanc, dicom_samples, tiny_predictor):
    src = _study_of(dicom_samples, "CT_")  # the model is for chest X-rays: the header gate refuses a CT
    conn = PacsConnection.from_env(orthanc.url)
    (r,) = predict_from_pacs(tiny_predictor, conn, src.StudyInstanceUID, store=True)
    assert r["ood"] is True and r["verdict"] == "refused"
    assert r["stored"]["sc"] is None  # no heat map: it would explain a finding the image does not have
    fields = writeback.sr_fields(_read(conn, src.StudyInstanceUID, r["stored"]["sr"]))
    assert fields["Verdict"] == "refused: not this kind of image" and "modality CT" in fields["Reason"]
    assert not {"Finding", "Headline", "Probability", "Probability class"} & set(fields)


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_write_that_fails_half_way_leaves_no_partial_series(orthanc, dicom_samples, tiny_predictor, monkeypatch,
                                                              fail_at):
    src = _study_of(dicom_samples, "CR_")
    conn = PacsConnection.from_env(orthanc.url)
    before = {s.series_uid for s in conn.list_series(src.StudyInstanceUID)}
    real_store, calls = conn.store, []

    def store_then_fail(datasets, study_uid=None):
        calls.append(len(datasets))
        if len(calls) == fail_at:  # the first objects really are stored; then the PACS fails
            real_store(datasets, study_uid)
            raise PacsError("The PACS at test answered with an error (HTTP 500) (storing results).")
        return real_store(datasets, study_uid)

    monkeypatch.setattr(conn, "store", store_then_fail)
    monkeypatch.setattr(writeback, "STORE_CHUNK", 1)
    (r,) = predict_from_pacs(tiny_predictor, conn, src.StudyInstanceUID, store=True, report=True)
    assert len(calls) == fail_at
    assert "Nothing was left in the PACS" in r["store_error"] and "stored" not in r
    assert r["label"] in ("NORMAL", "PNEUMONIA")  # the prediction itself is not lost
    assert {s.series_uid for s in conn.list_series(src.StudyInstanceUID)} == before


def test_burn_in_enlarges_small_overlays_and_keeps_the_picture_below_the_band():
    overlay = np.full((40, 30, 3), 90, np.uint8)
    out = writeback.burn_in(overlay)
    assert out.shape[1] == 512 and out.shape[0] == round(40 * 512 / 30)
    band = max(24, out.shape[0] // 14)
    assert (out[band:] == 90).all() and (out[:band] == 255).any()


def test_verdicts_and_card_fingerprint():
    assert writeback.verdict_of({"ood": True, "unfamiliar": True}) == "refused"
    assert writeback.verdict_of({"ood": False, "unfamiliar": True}) == "unfamiliar"
    assert writeback.verdict_of({"ood": None}) == "finding"
    card = {"name": "m", "class_names": ["a", "b"], "threshold": 0.5}
    assert writeback.card_fingerprint(card) == writeback.card_fingerprint({**card, "run_dir": "/elsewhere"})
    assert writeback.card_fingerprint(card) != writeback.card_fingerprint({**card, "threshold": 0.6})


def test_the_sr_carries_the_headline_not_the_decided_class_probability(dicom_samples):
    """A NORMAL decision at P(PNEUMONIA) = 0.62 below a 0.75 threshold: the SR gives P(PNEUMONIA) = 0.62 and
    says whose probability it is, never "probability of the finding" = 0.38 (no PACS needed: built and read)."""
    src = pydicom.dcmread(next(p for p in dicom_samples if p.name.startswith("CR_")))
    result = {"label": "NORMAL", "probabilities": {"NORMAL": 0.38, "PNEUMONIA": 0.62}, "threshold": 0.75,
              "positive_class": "PNEUMONIA", "ood": False}
    card = {"name": "m", "created": "2026-12-06", "intended_use": {"modalities": ["CR"], "body_parts": ["CHEST"]}}
    fields = writeback.sr_fields(writeback.build_sr(src, result, card, writeback.WriteSeries()))
    assert fields["Finding"] == "NORMAL" and fields["Headline"] == "NORMAL (P(PNEUMONIA) = 62.0%)"
    assert fields["Probability class"] == "PNEUMONIA" and fields["Probability"] == pytest.approx(0.62)
    assert fields["Borderline"] == "no" and fields["Operating threshold"] == 0.75
    near = writeback.sr_fields(writeback.build_sr(src, {**result, "probabilities": {"NORMAL": 0.28, "PNEUMONIA": 0.72}},
                                                  card, writeback.WriteSeries()))
    assert near["Borderline"] == "yes" and near["Headline"].endswith("borderline)")


def test_the_sr_of_a_finding_carries_the_cards_known_mimics(dicom_samples):
    src = pydicom.dcmread(next(p for p in dicom_samples if p.name.startswith("CR_")))
    card = {"name": "m", "created": "2026-12-06", "intended_use": {"finding_mimics": "it also calls atelectasis."}}
    result = {"label": "PNEUMONIA", "probabilities": {"NORMAL": 0.1, "PNEUMONIA": 0.9}, "threshold": 0.75,
              "positive_class": "PNEUMONIA", "ood": False}
    sr = writeback.sr_fields(writeback.build_sr(src, result, card, writeback.WriteSeries()))
    assert sr["Known limit of this model"] == "it also calls atelectasis."
    negative = {**result, "label": "NORMAL", "probabilities": {"NORMAL": 0.9, "PNEUMONIA": 0.1}}
    assert "Known limit of this model" not in writeback.sr_fields(
        writeback.build_sr(src, negative, card, writeback.WriteSeries()))


def test_the_sr_names_the_calibration_in_use_so_two_srs_of_one_image_differ(dicom_samples):
    """The card's calibration and a site's (trust.sites.site_card) give SRs that say which one made them, in
    the content and in the series description (two SRs of one image, series 9101, told apart)."""
    from medclf_core.trust.sites import site_card

    src = pydicom.dcmread(next(p for p in dicom_samples if p.name.startswith("CR_")), stop_before_pixels=True)
    card = {"name": "m", "created": "2026-12-06", "class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.7696,
            "calibration": {"method": "temperature scaling (validation NLL)", "temperature": 1.2, "fitted_on": "val"}}
    ward = site_card(card, {"site": "wardA", "temperature": 0.9, "threshold": 0.6388, "date": "2026-12-01"})
    result = {"label": "NORMAL", "probabilities": {"NORMAL": 0.35, "PNEUMONIA": 0.65}, "threshold": 0.7696,
              "positive_class": "PNEUMONIA", "ood": False}
    by_card = writeback.build_sr(src, result, card, writeback.WriteSeries())
    by_site = writeback.build_sr(src, {**result, "label": "PNEUMONIA", "threshold": 0.6388}, ward,
                                 writeback.WriteSeries())
    card_words = writeback.sr_fields(by_card)["Calibration in use"]
    site_words = writeback.sr_fields(by_site)["Calibration in use"]
    assert card_words.startswith("model card: temperature scaling (validation NLL), T = 1.2")
    assert site_words.startswith("site wardA: site 'wardA': T = 0.9") and "not the model card's" in site_words
    assert by_card.SeriesDescription == "medclf result (SR, card calibration, research use only)"
    assert by_site.SeriesDescription == "medclf result (SR, site wardA, research use only)"
    assert by_card.SeriesNumber == by_site.SeriesNumber == 9101
    long = site_card(card, {"site": "x" * 100, "temperature": 1.0, "threshold": 0.5})
    assert len(writeback.series_description("sr", long)) <= 64  # DICOM's limit for a series description


def test_intended_use_reads_as_sentences():
    card = {"intended_use": {"summary": "Chest X-rays of children (any hospital).", "modalities": ["CR", "DX"],
                             "body_parts": ["CHEST"]}}
    text = writeback.intended_use_text(card)
    assert text == "Chest X-rays of children (any hospital). Modalities: CR, DX; body parts: CHEST."
    assert ".;" not in text
    assert writeback.intended_use_text({"intended_use": {"summary": "adults"}}) == "adults"
    assert writeback.intended_use_text({"intended_use": {"modalities": ["CR"]}}) == "modalities: CR"
    assert writeback.intended_use_text({}) == "not stated on the model card"


def test_a_write_to_a_stopped_pacs_says_one_thing_and_names_every_series(dicom_samples):
    """Nothing answers: the message does not say "Nothing was changed" and then "may have been stored", and it
    names each series being written (the SR, the overlay and the PDF report)."""
    src = pydicom.dcmread(next(p for p in dicom_samples if p.name.startswith("CR_")), stop_before_pixels=True)
    card = {"name": "m", "created": "2026-12-06"}
    result = {"label": "NORMAL", "probabilities": {"NORMAL": 0.9, "PNEUMONIA": 0.1}, "ood": False}
    objects = writeback.build_objects(src, result, card, writeback.WriteSeries(),
                                      overlay=np.zeros((32, 32, 3), np.uint8), pdf=b"%PDF-1.4 test")
    conn = PacsConnection("http://127.0.0.1:9/dicom-web", timeout=2)  # the discard port: nothing listens
    with pytest.raises(PacsError) as e:
        writeback.store_all_or_nothing(conn, str(src.StudyInstanceUID), list(objects.values()))
    text = str(e.value)
    assert "could not be reached (storing results)" in text and "Nothing was changed" not in text
    assert "Up to 3 object(s) may have been stored" in text
    for name in ("medclf result (SR, card calibration", "medclf heat-map overlay", "medclf PDF report"):
        assert name in text
