"""Predict page against the hostile-input corpus: every file works or gets its own clear message,
and no patient identifier from a DICOM header reaches the page or the CSV export."""

from __future__ import annotations

import re

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
            assert not re.search(r"[A-Z]\w*(Error|Exception)\b", warnings[name]), warnings[name]  # plain words
        else:
            assert name not in warnings, warnings.get(name)
            row = table[table["file"] == name].iloc[0]
            # a readable file is classified, or flagged as unlike the training images (then no class is shown)
            assert row["decision"] in ("NORMAL", "PNEUMONIA") or row["out of distribution"] == "yes", dict(row)
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
    assert table.iloc[0]["decision"] == "not read" and "too small to classify" in table.iloc[0]["note"]
    good = table[table["file"] == JPEG.name].iloc[0]
    assert good["decision"] in ("NORMAL", "PNEUMONIA") or good["out of distribution"] == "yes"
    # the 65535 x 8 strip is either refused with its own message or shown without breaking the page
    assert "strip.png" in warnings or table.iloc[1]["decision"] != ""


def _csv_rows(at) -> dict[str, str]:
    """{the row's file label: the rest of its row} of the page's CSV export."""
    lines = at.session_state["predict_csv"].splitlines()[1:]
    return {line.split(",", 1)[0]: line.split(",", 1)[1] for line in lines}


def test_a_file_gets_the_same_name_alone_and_with_others(app_env, page):
    """Issue 26: a DICOM's CSV name was redacted by another upload's header (its SeriesDescription matching a
    word of this file's name). Each file is named by its own header and the name patterns only."""
    import numpy as np

    named = bad_inputs.dicom_bytes(bad_inputs.gradient(32, 32))
    other = bad_inputs.dicom_bytes(bad_inputs.gradient(32, 32), SeriesDescription="halfres")
    alone = _uploaded(page, [("RG1_chest_halfres.dcm", named, "application/dicom"),
                             (bad_inputs.IDENTIFYING_FILE_NAME, named, "application/dicom")])
    together = _uploaded(page, [("RG1_chest_halfres.dcm", named, "application/dicom"),
                                (bad_inputs.IDENTIFYING_FILE_NAME, named, "application/dicom"),
                                ("other.dcm", other, "application/dicom")])
    assert set(_csv_rows(alone)) == {"RG1_chest_halfres.dcm", "001_[redacted]_[redacted]_[redacted]_[redacted].dcm"}
    assert {k: v for k, v in _csv_rows(together).items() if k != "other.dcm"} == _csv_rows(alone)
    table = [str(v) for v in np.ravel(together.dataframe[0].value["file"].to_numpy())]
    assert table == ["RG1_chest_halfres.dcm", "001_[redacted]_[redacted]_[redacted]_[redacted].dcm", "other.dcm"]


def test_a_model_file_over_the_limits_is_not_offered_and_the_models_page_says_why(own_models, page):
    """Issue 26: a .keras whose config claims a 50000 x 50000 input was offered; its first prediction was
    killed for memory and took the server down. It is listed as unusable with the reason instead."""
    import shutil

    config, says = bad_inputs.HOSTILE_MODEL_CONFIGS["huge_input"]
    shutil.copytree(own_models / "tiny-a", own_models / "huge-input")
    card = (own_models / "huge-input" / "card.json")
    card.write_text(card.read_text().replace('"tiny-a"', '"huge-input"'))
    bad_inputs.write_keras_file(own_models / "huge-input" / "model.keras", config)
    models = page("models")
    models.run()
    assert not models.exception
    assert sorted(models.dataframe[0].value["name"]) == ["tiny-a", "tiny-b"]  # the runs offered (one registry scan)
    reasons = dict(zip(models.dataframe[1].value["folder"], models.dataframe[1].value["reason"], strict=True))
    assert says in reasons["huge-input"] and "refused before building it" in reasons["huge-input"]
