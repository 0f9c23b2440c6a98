"""Predict's "From PACS" source and Evaluate's labelled studies, against a real Orthanc (tests/pacs_server.py):
search, pick, predict through the upload path, write back, and read the objects back over DICOMweb; the faults
(wrong password, the PACS down, a study without images, a huge series) give plain messages and lose nothing."""

from __future__ import annotations

import io

import pytest

from helpers import SAMPLES, pdf_text, rendered, result_images
from pacs_dicom import PATIENT_ID, PATIENT_NAME, chest_dicom
from pacs_server import OrthancServer, require_orthanc

JPEGS = sorted((SAMPLES / "images" / "chest_xray").glob("*.jpeg"))
MR = sorted((SAMPLES / "dicom").glob("MR_*.dcm"))[0]


@pytest.fixture
def pacs_env(orthanc_server, monkeypatch):
    """The PACS emptied; the page's address and the credentials from the environment."""
    pacs = orthanc_server
    pacs.clear()
    monkeypatch.setenv("MEDCLF_PACS_URL", pacs.url)
    monkeypatch.setenv("MEDCLF_PACS_USER", pacs.user)
    monkeypatch.setenv("MEDCLF_PACS_PASSWORD", pacs.password)
    return pacs


def _chest_study(server, tmp_path, n: int = 1, patient_id: str = PATIENT_ID) -> dict:
    """One study of ``n`` chest CR images (one series) stored in ``server``; its UIDs."""
    uids = None
    for k in range(n):
        path = tmp_path / f"chest{k}.dcm"
        uids = chest_dicom(JPEGS[k % len(JPEGS)], path, study_uid=uids and uids["study"],
                           series_uid=uids and uids["series"], patient_id=patient_id, instance_number=k + 1)
        server.upload([path])
    return uids


def _page_text(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "subheader", "info", "warning", "error", "success")
             for e in getattr(at, kind)]
    parts += [str(o) for s in at.selectbox for o in s.options]
    parts += [d.value.to_csv() for d in at.dataframe]
    return rendered("\n".join(map(str, parts)))


def _search(at, patient: str = "", modality: str = ""):
    at.text_input(key="pacs-patient").set_value(patient)
    at.selectbox(key="pacs-modality").set_value(modality)
    at.button(key="pacs-search").click()
    at.run()
    assert not at.exception, at.exception
    return at


def _stored(server, study_uid: str) -> dict:
    """``{modality: [pydicom Dataset]}`` of the study, read back over DICOMweb (WADO-RS)."""
    from pydicom import dcmread

    from medclf_core.pacs.client import PacsConnection

    conn = PacsConnection(server.url, server.user, server.password)
    out: dict = {}
    for s in conn.list_series(study_uid):
        for sop in conn.list_instances(study_uid, s.series_uid):
            out.setdefault(s.modality, []).append(dcmread(io.BytesIO(conn.fetch_instance(study_uid, s.series_uid,
                                                                                         sop))))
    return out


def _only(server, study_uid: str, modality: str):
    found = _stored(server, study_uid)[modality]
    assert len(found) == 1
    return found[0]


def test_search_pick_predict_and_write_back(older_env, pacs_env, page, tmp_path):
    uids = _chest_study(pacs_env, tmp_path)
    pacs_env.upload([MR])  # another patient's study: the search by patient ID must leave it out
    at = page("predict")
    at.run()
    assert not at.exception
    _search(at, patient=PATIENT_ID)
    assert len(at.selectbox(key="pacs-study").options) == 1
    series = at.dataframe[0].value
    assert list(series["modality"]) == ["CR"] and list(series["body part"]) == ["CHEST"]
    assert at.multiselect[0].value == [0]
    at.button(key="pacs-fetch").click()
    at.run()
    assert not at.exception, at.exception
    # the same path as an upload: the decision, the image and its Grad-CAM overlay
    assert at.subheader[0].value.startswith("PACS CR series 1 image 1.dcm: ")
    label = rendered(at.subheader[0].value).split(": ")[1].split(" (")[0]
    assert any("Decision at the model's operating threshold" in m.value for m in at.markdown)
    assert len(result_images(at)) == 2
    at.checkbox(key="pacs-write-pdf").check()
    at.button(key="pacs-write").click()
    at.run()
    assert not at.exception and not at.error, at.error
    assert "Structured Report" in at.success[0].value and "Secondary Capture" in at.success[0].value
    text = _page_text(at)
    assert PATIENT_ID not in text and PATIENT_NAME not in text and PATIENT_NAME.replace("^", " ") not in text

    from medclf_core.pacs.writeback import sr_fields

    back = _stored(pacs_env, uids["study"])
    assert len(back.pop("CR")) == 1 and len(back.pop("SR")) == 1 and len(back.pop("DOC")) == 1
    assert len(back) == 1 and len(next(iter(back.values()))) == 1  # the Secondary Capture, in a series of its own
    sr = _only(pacs_env, uids["study"], "SR")
    fields = sr_fields(sr)
    assert fields["Finding"] == label
    assert fields["Source of Measurement"] == uids["sop"]
    assert str(sr.StudyInstanceUID) == uids["study"] and str(sr.SeriesInstanceUID) != uids["series"]
    assert str(sr.SOPInstanceUID) in at.success[0].value
    sc = next(iter(back.values()))[0]
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.SOPInstanceUID in at.success[0].value
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == uids["sop"] and sc.BurnedInAnnotation == "YES"
    pdf = bytes(_only(pacs_env, uids["study"], "DOC").EncapsulatedDocument)
    assert pdf[:4] == b"%PDF" and "Heat map (opacity 0.45)" in pdf_text(pdf)  # the opacity of the overlay stored


def test_an_image_the_gate_refuses_gets_a_refused_sr_and_no_heat_map(refitted_env, pacs_env, page):
    pacs_env.upload([MR])
    at = _search(page("predict").run(), modality="MR")
    at.button(key="pacs-fetch").click()
    at.run()
    assert not at.exception
    assert "not an image this model knows" in at.subheader[0].value
    at.button(key="pacs-write").click()
    at.run()
    assert not at.error and "Secondary Capture" not in at.success[0].value
    from medclf_core.pacs.writeback import sr_fields

    study = at.selectbox(key="pacs-study").value.study_uid
    back = _stored(pacs_env, study)
    assert set(back) == {"MR", "SR"}
    fields = sr_fields(back["SR"][0])
    assert fields["Verdict"] == "refused: not this kind of image" and "Finding" not in fields


def test_wrong_password_then_the_pacs_down_mid_way_lose_nothing(older_env, tmp_path, page, monkeypatch):
    require_orthanc()
    own = OrthancServer(tmp_path / "own").start()
    try:
        _chest_study(own, tmp_path)
        monkeypatch.setenv("MEDCLF_PACS_URL", own.url)
        monkeypatch.delenv("MEDCLF_PACS_USER", raising=False)
        monkeypatch.delenv("MEDCLF_PACS_PASSWORD", raising=False)
        at = page("predict").run()
        at.text_input(key="pacs-user").set_value(own.user)
        at.text_input(key="pacs-password").set_value("not-the-password")
        _search(at)
        assert "refused the user name or password" in at.error[0].value
        assert "Check the user name and password typed" in at.error[0].value  # typed: not the server's variables
        assert "MEDCLF_PACS" not in at.error[0].value and "not-the-password" not in _page_text(at)
        at.text_input(key="pacs-password").set_value(own.password)
        _search(at)
        assert not at.error
        at.button(key="pacs-fetch").click()
        at.run()
        shown = at.subheader[0].value
        own.stop()  # the PACS goes down: writing fails plainly, the result stays on the page
        at.button(key="pacs-write").click()
        at.run()
        assert not at.exception
        assert "could not be reached" in at.error[0].value and at.subheader[0].value == shown
        assert "Nothing was changed" not in at.error[0].value  # it may also say what may have been stored
        _search(at)  # a search while it is down: a message, the earlier study list kept
        assert "could not be reached" in at.error[0].value
        assert len(at.selectbox(key="pacs-study").options) == 1 and at.subheader[0].value == shown
    finally:
        own.stop()


def test_two_instances_with_the_same_number_are_each_classified_once(older_env, pacs_env, page, tmp_path):
    """Two instances numbered 3 in one series: two options, two images classified, two SRs each referencing its
    own instance (the multiselect keyed them by their words: one was classified twice, the other never)."""
    uids = chest_dicom(JPEGS[0], tmp_path / "a.dcm", patient_id="TWINS", instance_number=3)
    other = chest_dicom(JPEGS[1], tmp_path / "b.dcm", study_uid=uids["study"], series_uid=uids["series"],
                        patient_id="TWINS", instance_number=3)
    pacs_env.upload([tmp_path / "a.dcm", tmp_path / "b.dcm"])
    at = _search(page("predict").run(), patient="TWINS")
    names = at.multiselect[0].options
    assert len(names) == 2 and len(set(names)) == 2 and all(n.startswith("image 3 (…") for n in names)
    assert at.multiselect[0].value == [0, 1]
    at.button(key="pacs-fetch").click()
    at.run()
    assert not at.exception, at.exception
    text = _page_text(at)
    assert all(f"PACS CR series 1 {n}.dcm" in text for n in names)
    at.button(key="pacs-write").click()
    at.run()
    assert not at.exception and not at.error, at.error
    from medclf_core.pacs.writeback import sr_fields

    srs = _stored(pacs_env, uids["study"])["SR"]
    assert sorted(sr_fields(sr)["Source of Measurement"] for sr in srs) == sorted([uids["sop"], other["sop"]])


def test_no_match_a_study_without_images_and_a_huge_series(older_env, pacs_env, page, tmp_path):
    at = _search(page("predict").run(), patient="NOBODY")
    assert any("No study in the PACS matches" in i.value for i in at.info)
    # a study holding only a report and a PDF: its SR and Encapsulated PDF written, then its image removed
    from medclf_core.pacs.client import PacsConnection
    from medclf_core.pacs.writeback import write_results

    uids = _chest_study(pacs_env, tmp_path, patient_id="REPORTS-ONLY")
    conn = PacsConnection(pacs_env.url, pacs_env.user, pacs_env.password)
    write_results(conn, (tmp_path / "chest0.dcm").read_bytes(),
                  {"label": "NORMAL", "probabilities": {"NORMAL": 0.9, "PNEUMONIA": 0.1}, "ood": False},
                  {"name": "tiny"}, pdf=b"%PDF-1.4 test")
    conn.delete_instance(uids["study"], uids["series"], uids["sop"])
    at = _search(at, patient="REPORTS-ONLY")
    assert any("no image series" in w.value for w in at.warning)
    assert set(at.dataframe[0].value["images"]) == {"no (report or document)"}
    assert "pacs-fetch" not in [b.key for b in at.button]
    # a series of 20 images: the stated limit, the first 16 chosen
    import pacs_ui

    _chest_study(pacs_env, tmp_path, n=pacs_ui.MAX_PICKED + 4, patient_id="HUGE")
    at = _search(at, patient="HUGE")
    assert any(f"at most {pacs_ui.MAX_PICKED} are classified at once" in i.value for i in at.info)
    assert at.multiselect[0].value == list(range(pacs_ui.MAX_PICKED))
    assert f"Classify {pacs_ui.MAX_PICKED} image(s)" in at.button(key="pacs-fetch").label


def test_evaluate_a_labelled_list_of_studies(older_env, pacs_env, page, tmp_path):
    normal = [j for j in JPEGS if j.name.lower().startswith("normal")][:2]
    sick = [j for j in JPEGS if j.name.lower().startswith("pneumonia")][:2]
    rows = ["StudyInstanceUID,label"]
    for k, (jpeg, label) in enumerate([(j, "NORMAL") for j in normal] + [(j, "pneumonia") for j in sick]):
        uids = chest_dicom(jpeg, tmp_path / f"e{k}.dcm", patient_id=f"EVAL{k}")
        pacs_env.upload([tmp_path / f"e{k}.dcm"])
        rows.append(f"{uids['study']},{label}")
    rows.append("1.2.3.4.5.6.7.8.9,NORMAL")  # not in the PACS: listed as skipped, not a failure
    at = page("evaluate").run()
    at.radio(key="eval_source").set_value("pacs")
    at.run()
    assert not at.exception
    at.file_uploader(key="eval_pacs_csv").set_value(("studies.csv", "\n".join(rows).encode(), "text/csv"))
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error, at.error
    assert not at.warning, [w.value for w in at.warning]
    assert any(s.value.endswith("on 4 images") for s in at.subheader)
    # a study's images are resampled together (session 21): here one image per study
    assert "**Metrics** (95% bootstrap intervals, resampling 4 studies)" in [m.value for m in at.markdown]
    assert any("note(s) on the studies" in e.label for e in at.expander)
    # a bad list: a plain message naming the line
    at.file_uploader(key="eval_pacs_csv").set_value(("bad.csv", b"1.2.3,CAT\n", "text/csv"))
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and "Line 1" in at.error[0].value
