"""PacsConnection against a real Orthanc (search, list, fetch) and against faults: wrong password, a PACS that
is stopped, one that drops the connection mid-request, one that is slow, one that answers nonsense."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import numpy as np
import pydicom
import pytest

from medclf_core.io.images import load_image
from medclf_core.pacs.client import PacsConnection, PacsError, is_image_sop_class


def _uids(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.PatientID)


def test_search_list_and_fetch_give_what_the_files_hold(orthanc, dicom_samples):
    conn = PacsConnection.from_env(orthanc.url)
    assert len(conn.search_studies()) == len(dicom_samples)
    cr = next(p for p in dicom_samples if p.name.startswith("CR_"))
    study, series, sop, patient = _uids(cr)
    by_modality = conn.search_studies(modality="cr")
    assert [s.study_uid for s in by_modality] == [study] and by_modality[0].modalities == ("CR",)
    assert [s.study_uid for s in conn.search_studies(patient_id=patient)] == [study]
    date = pydicom.dcmread(cr, stop_before_pixels=True).StudyDate
    assert study in {s.study_uid for s in conn.search_studies(study_date=f"{date[:4]}-{date[4:6]}-{date[6:]}")}
    assert conn.search_studies(study_date="19000101") == []
    assert len(conn.search_studies(limit=2)) == 2
    (s,) = conn.list_series(study)
    assert (s.series_uid, s.modality, s.body_part, s.n_instances, s.is_image) == (series, "CR", "CHEST", 1, True)
    assert conn.list_instances(study, series) == [sop]
    fetched = load_image(conn.fetch_instance(study, series, sop))
    assert np.array_equal(fetched.pixels, load_image(cr).pixels)  # same decoder path, same pixels (J2K kept)


def test_wrong_password_is_a_plain_message_without_the_password(orthanc):
    conn = PacsConnection(orthanc.url, orthanc.user, "not-the-password")
    with pytest.raises(PacsError, match="refused the user name or password") as e:
        conn.search_studies()
    assert "not-the-password" not in str(e.value) and "not-the-password" not in repr(conn)


def test_credentials_come_from_the_environment(orthanc, monkeypatch):
    assert PacsConnection.from_env(orthanc.url).search_studies()
    monkeypatch.delenv("MEDCLF_PACS_PASSWORD")
    with pytest.raises(PacsError, match="MEDCLF_PACS_PASSWORD"):
        PacsConnection.from_env(orthanc.url).search_studies()


def test_missing_instance_message_names_no_uid(orthanc, dicom_samples):
    study, series, _, _ = _uids(dicom_samples[0])
    with pytest.raises(PacsError) as e:
        PacsConnection.from_env(orthanc.url).fetch_instance(study, series, "1.2.3.4.5.6.7.8.9")
    assert "1.2.3.4.5.6.7.8.9" not in str(e.value) and study not in str(e.value)


def test_a_stopped_pacs_says_it_cannot_be_reached(private_orthanc):
    conn = PacsConnection(private_orthanc.url, private_orthanc.user, private_orthanc.password)
    assert conn.search_studies()
    private_orthanc.stop()
    with pytest.raises(PacsError, match="could not be reached"):
        conn.search_studies()


class _Fake(http.server.BaseHTTPRequestHandler):
    mode = "malformed"

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.mode == "slow":
            time.sleep(3)
        if self.mode == "drop":  # the PACS dies mid-request: headers promised a body that never comes
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'[{"0020000D": ')
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = b"<html>this is not DICOM JSON</html>" if self.mode == "malformed" else b'{"not": "a list"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("mode", "fragment"), [("malformed", "could not be read"),
                                                ("wrong_shape", "could not be read"),
                                                ("slow", "did not answer within"), ("drop", "PACS at 127.0.0.1")])
def test_slow_malformed_or_dropped_answers_are_plain_errors(mode, fragment):
    handler = type("H", (_Fake,), {"mode": mode})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = PacsConnection(f"http://127.0.0.1:{server.server_address[1]}/dicom-web", timeout=1)
        with pytest.raises(PacsError, match=fragment) as e:
            conn.search_studies(patient_id="PID-SECRET-1")
        assert "PID-SECRET-1" not in str(e.value) and "Traceback" not in str(e.value)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("url", ["", "localhost:8042", "ftp://x/dicom-web"])
def test_a_bad_address_is_refused_before_any_request(url):
    with pytest.raises(PacsError, match="DICOMweb root URL"):
        PacsConnection(url)


def test_bad_dates_and_non_image_classes():
    conn = PacsConnection("http://127.0.0.1:9/dicom-web")
    with pytest.raises(PacsError, match="study date"):
        conn.search_studies(study_date="yesterday")
    assert not is_image_sop_class("1.2.840.10008.5.1.4.1.1.88.33")  # Comprehensive SR
    assert not is_image_sop_class("1.2.840.10008.5.1.4.1.1.104.1")  # Encapsulated PDF
    assert is_image_sop_class("1.2.840.10008.5.1.4.1.1.1")  # CR


def test_a_refused_password_typed_in_a_form_says_to_check_it(orthanc):
    """Typed in the app's form: check what was typed; from the environment (CLI): set the variables."""
    typed = PacsConnection(orthanc.url, orthanc.user, "not-the-password", typed=True)
    with pytest.raises(PacsError, match="refused the user name or password") as e:
        typed.search_studies()
    assert "Check the user name and password typed" in str(e.value) and "MEDCLF_PACS" not in str(e.value)
    with pytest.raises(PacsError, match="Set MEDCLF_PACS_USER and MEDCLF_PACS_PASSWORD"):
        PacsConnection(orthanc.url, orthanc.user, "not-the-password").search_studies()


def test_nothing_was_changed_is_said_only_of_reads():
    import requests

    conn = PacsConnection("http://127.0.0.1:9/dicom-web")
    fault = requests.exceptions.ConnectionError("refused")
    assert conn.explain(fault, "searching studies").endswith("Nothing was changed.")
    assert "Nothing was changed" not in conn.explain(fault, "storing results")
    assert "Nothing was changed" not in conn.explain(fault, "removing a stored result")
