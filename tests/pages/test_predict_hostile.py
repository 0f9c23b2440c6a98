"""Predict page against the hostile-input corpus: every file works or gets its own clear message,
and no patient identifier from a DICOM header reaches the page or the CSV export."""

from __future__ import annotations

import bad_inputs
from helpers import SAMPLES, rendered

JPEG = sorted((SAMPLES / "images" / "chest_xray").glob("*.jpeg"))[0]


def _uploaded(page, files):
    """The Predict page after ``files`` were uploaded together; no exception."""
    at = page("predict")
    at.run()
    at.file_uploader(key="predict_upload").set_value(files)
    at.run()
    assert not at.exception, at.exception
    return at


def _file_warnings(at) -> dict[str, str]:
    """{file name: its warning}: file messages name the file in bold (an out-of-distribution warning of the
    detail view does not)."""
    return {rendered(w.value).split("**")[1]: rendered(w.value) for w in at.warning if "**" in w.value}


def test_every_corpus_file_predicts_or_gets_its_message(app_env, page):
    cases = bad_inputs.ALL_CASES
    files = [(f"{c.name}{c.suffix or '.dcm'}", c.make(), "application/octet-stream") for c in cases]
    at = _uploaded(page, files)
    warnings = _file_warnings(at)
    table = at.dataframe[0].value
    assert len(table) == len(cases)
    for case, (name, _, _) in zip(cases, files, strict=True):
        if case.error:
            assert name in warnings, f"{name} got no message"
            assert case.error.lower() in warnings[name].lower(), warnings[name]
        else:
            assert name not in warnings, warnings.get(name)
            row = table[table["file"] == name].iloc[0]
            # a readable file is classified, or flagged as unlike the training images (then no class is shown)
            assert row["class"] in ("NORMAL", "PNEUMONIA") or row["out of distribution"] == "yes", dict(row)
            if row["out of distribution"] == "yes":
                assert row["decision"].startswith("out of distribution: not a finding")
    for text in [m.value for m in at.markdown] + [c.value for c in at.caption] + list(warnings.values()):
        assert "Traceback" not in text


def test_no_patient_identifier_on_the_page_or_in_the_csv(app_env, page):
    import numpy as np

    dicom = bad_inputs.dicom_bytes(bad_inputs.gradient(32, 32))
    broken = bad_inputs.dicom_bytes(None)  # no pixel data, same fake patient
    at = _uploaded(page, [("study.dcm", dicom, "application/dicom"), ("report.dcm", broken, "application/dicom"),
                          (JPEG.name, JPEG.read_bytes(), "image/jpeg")])
    shown = " ".join([rendered(m.value) for m in at.markdown] + [rendered(c.value) for c in at.caption]
                     + [rendered(w.value) for w in at.warning]
                     + [str(v) for v in np.ravel(at.dataframe[0].value.to_numpy())])
    exported = at.session_state["predict_csv"]
    assert "study.dcm" in exported and "p_PNEUMONIA" in exported
    for secret in bad_inputs.PATIENT_STRINGS:
        assert secret not in shown, secret
        assert secret not in exported, secret


def test_a_65535_by_1_png_gets_its_message_and_the_others_keep_their_results(app_env, page):
    """Issue 17 item 8: an extreme-aspect image used to crash st.image (height 0) and lose every result."""
    import io

    import numpy as np
    from PIL import Image

    def png(width: int, height: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (height, width // 256 + 1))[:, :width]).save(buf, "PNG")
        return buf.getvalue()

    files = [("line.png", png(65535, 1), "image/png"), ("strip.png", png(65535, 8), "image/png"),
             (JPEG.name, JPEG.read_bytes(), "image/jpeg")]
    at = _uploaded(page, files)
    warnings = _file_warnings(at)
    assert "line.png" in warnings and "too small to classify" in warnings["line.png"]
    table = at.dataframe[0].value
    assert list(table["file"]) == ["line.png", "strip.png", JPEG.name]
    assert table.iloc[0]["decision"].startswith("not read: ")
    good = table[table["file"] == JPEG.name].iloc[0]
    assert good["class"] in ("NORMAL", "PNEUMONIA") or good["out of distribution"] == "yes"
    # the 65535 x 8 strip is either refused with its own message or shown without breaking the page
    assert "strip.png" in warnings or table.iloc[1]["decision"] != ""
