"""predict_from_pacs and ``medclf predict --pacs`` against a real Orthanc: a study with no images, non-image
series skipped with a note, the instance limit stated, the PACS stopped mid-run (results kept), the CLI."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from pydicom.uid import generate_uid

from medclf_core.cli.commands import main
from medclf_core.pacs import writeback
from medclf_core.pacs.client import PacsConnection, PacsError
from medclf_core.pacs.flow import predict_from_pacs


def _header(paths, prefix):
    return pydicom.dcmread(next(p for p in paths if p.name.startswith(prefix)))


def _upload(orthanc, datasets):
    s = orthanc.session()
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        s.post(f"{orthanc.rest}/instances", data=buf.getvalue(), timeout=20).raise_for_status()


def test_a_study_with_no_images_is_a_plain_error(orthanc, dicom_samples, tiny_predictor):
    src = _header(dicom_samples, "CT_")
    src.StudyInstanceUID = generate_uid()  # a study holding only an SR
    sr = writeback.build_sr(src, {"ood": True, "ood_reason": "test"}, tiny_predictor.card, writeback.WriteSeries())
    _upload(orthanc, [sr])
    with pytest.raises(PacsError, match="no images to classify"):
        predict_from_pacs(tiny_predictor, PacsConnection.from_env(orthanc.url), src.StudyInstanceUID)


def test_a_study_the_pacs_does_not_have_says_so(orthanc, tiny_predictor):
    with pytest.raises(PacsError, match="has no study with the Study Instance UID given") as e:
        predict_from_pacs(tiny_predictor, PacsConnection.from_env(orthanc.url), "1.2.3.4")
    assert "no images to classify" not in str(e.value) and "1.2.3.4" not in str(e.value)


def test_non_image_series_and_our_own_results_are_skipped_with_a_note(orthanc, dicom_samples, tiny_predictor,
                                                                     monkeypatch):
    from medclf_core.reports import pdf

    made, report_bytes = [], pdf.report_bytes
    monkeypatch.setattr(pdf, "report_bytes", lambda *a, **k: made.append(k.get("opacity")) or report_bytes(*a, **k))
    src = _header(dicom_samples, "CR_")
    conn = PacsConnection.from_env(orthanc.url)
    predict_from_pacs(tiny_predictor, conn, src.StudyInstanceUID, store=True, report=True, opacity=0.65)
    assert made == [0.65]  # the PDF's heat map at the opacity of the overlay stored beside it
    notes: list = []
    results = predict_from_pacs(tiny_predictor, conn, src.StudyInstanceUID, notes=notes)
    assert [r["sop_instance_uid"] for r in results] == [src.SOPInstanceUID]  # the SR, SC and PDF are not read
    assert any("SR series holds no images" in n for n in notes) and any("DOC series" in n for n in notes)
    assert any("medclf's own results" in n for n in notes)
    with pytest.raises(PacsError, match="no series with the Series Instance UID"):
        predict_from_pacs(tiny_predictor, conn, src.StudyInstanceUID, "1.2.3")


def test_a_large_series_is_cut_at_the_stated_limit(orthanc, dicom_samples, tiny_predictor):
    src = _header(dicom_samples, "CT_")
    copies = []
    for k in range(2, 5):
        ds = pydicom.dcmread(next(p for p in dicom_samples if p.name.startswith("CT_")))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k
        copies.append(ds)
    _upload(orthanc, copies)
    notes: list = []
    results = predict_from_pacs(tiny_predictor, PacsConnection.from_env(orthanc.url), src.StudyInstanceUID,
                                src.SeriesInstanceUID, max_instances=2, notes=notes)
    assert len(results) == 2 and all("error" not in r for r in results)
    assert any("has 4 image instances; only the first 2 were read" in n for n in notes)


def test_the_pacs_stopped_mid_run_keeps_the_results(private_orthanc, dicom_samples, tiny_predictor):
    src = _header(dicom_samples, "CR_")
    conn = PacsConnection(private_orthanc.url, private_orthanc.user, private_orthanc.password)
    stopped = []

    def stop_after_the_read(done, total):
        private_orthanc.stop()  # the PACS goes away between reading the image and writing the results
        stopped.append(done)

    (r,) = predict_from_pacs(tiny_predictor, conn, src.StudyInstanceUID, store=True, progress=stop_after_the_read)
    assert stopped and r["label"] in ("NORMAL", "PNEUMONIA")
    assert "could not be reached" in r["store_error"] and "stored" not in r


@pytest.fixture
def tiny_run(tmp_path, tiny_predictor):
    run = tmp_path / "models" / "tiny-chest"
    run.mkdir(parents=True)
    tiny_predictor.model.save(run / "model.keras")
    (run / "card.json").write_text(json.dumps(tiny_predictor.card))
    return run.parent


def test_cli_predict_from_the_pacs_and_store(orthanc, dicom_samples, tiny_run, capsys):
    src = _header(dicom_samples, "CR_")
    argv = ["predict", "tiny-chest", "--models-dir", str(tiny_run), "--pacs", orthanc.url, "--study",
            src.StudyInstanceUID, "--store", "--json", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr()
    (r,) = json.loads(out.out.strip().splitlines()[-1])
    assert r["sop_instance_uid"] == src.SOPInstanceUID and r["stored"]["sr"] and r["stored"]["sc"]
    assert orthanc.password not in out.out + out.err
    assert "Calibration:" not in out.err  # the card's own: no site line
    series = PacsConnection.from_env(orthanc.url).list_series(src.StudyInstanceUID)
    sr_series = [s for s in series if s.modality == "SR"]
    assert len(sr_series) == 1


def test_cli_wrong_password_and_bad_arguments(orthanc, dicom_samples, tiny_run, capsys, monkeypatch):
    src = _header(dicom_samples, "CR_")
    monkeypatch.setenv("MEDCLF_PACS_PASSWORD", "wrong-one")
    assert main(["predict", "tiny-chest", "--models-dir", str(tiny_run), "--pacs", orthanc.url, "--study",
                 src.StudyInstanceUID, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "refused the user name or password" in err and "Traceback" not in err and "wrong-one" not in err
    assert main(["predict", "tiny-chest", "--models-dir", str(tiny_run), "--pacs", orthanc.url]) == 2
    assert "--study" in capsys.readouterr().err


def test_cli_pacs_mode_names_the_site_calibration_and_the_sr_says_it(orthanc, dicom_samples, tiny_run, capsys):
    """``--site`` in PACS mode: the "Calibration: site" line is printed (it was skipped), and the SR written
    names the site (two SRs of one image made with different calibrations are told apart)."""
    site = {"site": "wardA", "model": "tiny-chest", "temperature": 0.9, "threshold": 0.4, "date": "2026-12-01"}
    (tiny_run / "tiny-chest" / "sites").mkdir()
    (tiny_run / "tiny-chest" / "sites" / "wardA.json").write_text(json.dumps(site))
    src = _header(dicom_samples, "CR_")
    assert main(["predict", "tiny-chest", "--models-dir", str(tiny_run), "--pacs", orthanc.url, "--study",
                 src.StudyInstanceUID, "--site", "wardA", "--store", "--json", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "Calibration: site wardA" in out.err
    (r,) = json.loads(out.out.strip().splitlines()[-1])
    conn = PacsConnection.from_env(orthanc.url)
    sr = next(conn.client.retrieve_instance(src.StudyInstanceUID, s.series_uid, r["stored"]["sr"])
              for s in conn.list_series(src.StudyInstanceUID) if r["stored"]["sr"] in conn.list_instances(
                  src.StudyInstanceUID, s.series_uid))
    assert sr.SeriesDescription == "medclf result (SR, site wardA, research use only)"
    assert writeback.sr_fields(sr)["Calibration in use"].startswith("site wardA: site 'wardA'")
