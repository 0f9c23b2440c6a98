"""End to end in a real browser with a real PACS: the Predict page's "From PACS" source driven in Chromium
(address, user and password typed, search, pick, predict, write back), the Structured Report then read back
over DICOMweb, and Orthanc's own web interface (its Explorer) checked to show the written series in the study.

Screenshots: ``predict-pacs.png`` (the PACS source with its result and what was written) and
``pacs-orthanc.png`` (Orthanc Explorer's study page), in ``$MEDCLF_SCREENSHOTS_DIR`` as for test_browser.
The app server, the browser and the helpers are test_browser's.
"""

from __future__ import annotations

import pytest

from e2e import test_browser as browser_test
from e2e.app_browser import go, wait_idle
from pacs_dicom import PATIENT_ID, PATIENT_NAME, chest_dicom
from pacs_server import OrthancServer, require_orthanc
from helpers import SAMPLES

JPEG = sorted((SAMPLES / "images" / "chest_xray").glob("*.jpeg"))[0]

pytestmark = pytest.mark.slow
# test_browser's fixtures (the app server, its page, the screenshot folder; Chromium is conftest's) and helpers
server, browser_page, shots = browser_test.server, browser_test.browser_page, browser_test.shots
_go, _screenshot, _wait_idle = go, browser_test._screenshot, wait_idle


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    require_orthanc()
    folder = tmp_path_factory.mktemp("orthanc")
    orthanc = OrthancServer(folder).start()
    try:
        uids = chest_dicom(JPEG, folder / "chest.dcm")
        orthanc.upload([folder / "chest.dcm"])
        yield orthanc, uids
    finally:
        orthanc.stop()


def test_pacs_source_predicts_and_writes_back_and_orthanc_shows_it(browser_page, server, shots, pacs, chromium):
    orthanc, uids = pacs
    page = browser_page
    _go(page, server, "")
    page.get_by_text("... or open a study from a PACS (DICOMweb)").first.click()
    for name, value in (("PACS DICOMweb address", orthanc.url), ("PACS user", orthanc.user),
                        ("PACS password", orthanc.password), ("Patient ID", PATIENT_ID)):
        box = page.get_by_role("textbox", name=name, exact=True)
        box.fill(value)
        box.press("Tab")
        _wait_idle(page)
    page.get_by_role("button", name="Search", exact=True).click()
    fetch = page.get_by_role("button", name="Classify 1 image(s) from the PACS")
    fetch.wait_for(timeout=60_000)
    _wait_idle(page)
    fetch.click()
    page.get_by_text("PACS CR series 1 image 1.dcm").first.wait_for(timeout=120_000)
    _wait_idle(page)
    page.get_by_role("button", name="Write results to PACS").click()
    page.get_by_text("Written to the study in the PACS").wait_for(timeout=120_000)
    _wait_idle(page)
    content = page.content()
    shown = page.locator("body").inner_text()  # what the page shows (the typed patient ID is in its input only)
    assert "Traceback" not in content and PATIENT_ID not in shown and PATIENT_NAME.replace("^", " ") not in shown
    assert PATIENT_NAME not in shown  # made up; Orthanc's own interface shows them, medclf's page must not
    assert orthanc.password not in shown  # typed into a password field, echoed nowhere
    assert page.get_by_role("textbox", name="PACS user").count() == 1
    assert page.locator("input[aria-label='PACS password']").get_attribute("type") == "password"
    _screenshot(page, shots / "predict-pacs.png")

    # the SR, read back over DICOMweb: same study, a new series, the source referenced
    import io

    from pydicom import dcmread

    from medclf_core.pacs.client import PacsConnection
    from medclf_core.pacs.writeback import sr_fields

    conn = PacsConnection(orthanc.url, orthanc.user, orthanc.password)
    series = {s.modality: s for s in conn.list_series(uids["study"])}
    assert "SR" in series and series["SR"].series_uid != uids["series"]
    sr = dcmread(io.BytesIO(conn.fetch_instance(uids["study"], series["SR"].series_uid,
                                                conn.list_instances(uids["study"], series["SR"].series_uid)[0])))
    fields = sr_fields(sr)
    assert fields["Source of Measurement"] == uids["sop"]
    assert fields["Verdict"] in ("finding", "unfamiliar", "refused: not this kind of image")
    if fields["Verdict"] != "refused: not this kind of image":
        assert fields["Finding"] in ("NORMAL", "PNEUMONIA") and fields["Finding"] in content
    assert str(sr.SOPInstanceUID) in content  # the page said what it wrote

    # Orthanc's own web interface shows the written series in the study
    found = orthanc.session().post(f"{orthanc.rest}/tools/lookup", data=uids["study"], timeout=20).json()
    study_id = next(f["ID"] for f in found if f["Type"] == "Study")
    context = page.context.browser.new_context(viewport={"width": 1200, "height": 900}, http_credentials={
        "username": orthanc.user, "password": orthanc.password})
    try:
        explorer = context.new_page()
        explorer.goto(f"{orthanc.rest}/app/explorer.html#study?uuid={study_id}")
        explorer.get_by_text("medclf result (SR, card calibration, research use only)").first.wait_for(timeout=60_000)
        explorer.get_by_text("PA chest").first.wait_for()
        explorer.wait_for_timeout(1000)
        explorer.screenshot(path=str(shots / "pacs-orthanc.png"), full_page=True)
    finally:
        context.close()
