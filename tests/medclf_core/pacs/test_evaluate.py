"""medclf_core.pacs.evaluate: the labelled study list, and studies fetched from a real Orthanc into a dataset
folder that evaluate_folder reads like any other."""

from __future__ import annotations

from pathlib import Path

import pytest

from medclf_core.errors import DatasetError
from medclf_core.pacs.client import PacsConnection, PacsError
from medclf_core.pacs.evaluate import MAX_STUDIES, STUDY_PATTERN, read_study_labels, stage_studies

NAMES = ["NORMAL", "PNEUMONIA"]


def test_read_study_labels_header_case_comments_and_duplicates():
    text = "\ufeffStudyInstanceUID,label\n# a comment\n\n1.2.3, normal \n1.2.4,PNEUMONIA\n1.2.3,NORMAL\n"
    rows = read_study_labels(text.encode("utf-8"), NAMES)
    assert [(r.line, r.study_uid, r.label) for r in rows] == [(4, "1.2.3", "NORMAL"), (5, "1.2.4", "PNEUMONIA")]
    assert [r.study_uid for r in read_study_labels("1.2.3,NORMAL\n", NAMES)] == ["1.2.3"]  # no header


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("StudyInstanceUID,label\n", "empty"),
    ("1.2.3\n", "Line 1 of the study list needs two columns"),
    ("1.2.3,NORMAL\nnot-a-uid,NORMAL\n", "Line 2 of the study list: the first column is not a DICOM UID"),
    ("1." + "2" * 70 + ",NORMAL\n", "not a DICOM UID"),
    ("1.2.3,CAT\n", "Line 1 of the study list: the label is not one of the model's classes (NORMAL, PNEUMONIA)"),
    ("1.2.3,NORMAL\n1.2.3,PNEUMONIA\n", "Line 2 of the study list: this study is listed before with another label"),
    (b"\xff\xfe\x00bin", "not a text (CSV) file"),
    ("".join(f"1.2.{k},NORMAL\n" for k in range(MAX_STUDIES + 1)), f"more than {MAX_STUDIES} studies"),
])
def test_read_study_labels_refuses_bad_lists_naming_the_line(text, words):
    with pytest.raises(DatasetError) as err:
        read_study_labels(text, NAMES)
    assert words in str(err.value)


def _uids(conn, modality: str) -> str:
    return next(s.study_uid for s in conn.search_studies(modality=modality))


def test_stage_studies_fetches_each_studys_images_under_its_label(orthanc):
    conn = PacsConnection.from_env(orthanc.url)
    cr, ct = _uids(conn, "CR"), _uids(conn, "CT")
    rows = read_study_labels(f"{cr},PNEUMONIA\n{ct},normal\n9.9.9.9,NORMAL\n", NAMES)
    seen = []
    staged = stage_studies(conn, rows, progress=lambda done, total: seen.append((done, total)))
    try:
        files = sorted(str(p.relative_to(staged.root)) for p in Path(staged.root).rglob("*.dcm"))
        assert files == ["NORMAL/line002-1.dcm", "PNEUMONIA/line001-1.dcm"]
        assert seen == [(1, 3), (2, 3), (3, 3)]
        assert [s["file"] for s in staged.skipped] == ["line003 (NORMAL)"]  # the study not in the PACS
        from medclf_core.io.images import load_image

        assert load_image(Path(staged.root) / "PNEUMONIA" / "line001-1.dcm").dicom.metadata["Modality"] == "CR"
    finally:
        staged.remove()
    assert not Path(staged.folder).exists()


def test_stage_studies_without_any_image_or_with_the_pacs_down_leaves_nothing(private_orthanc, monkeypatch):
    conn = PacsConnection(private_orthanc.url, private_orthanc.user, private_orthanc.password)
    with pytest.raises(DatasetError, match="None of the listed studies has an image"):
        stage_studies(conn, read_study_labels("9.9.9.9,NORMAL\n", NAMES))
    rows = read_study_labels(f"{_uids(conn, 'CR')},NORMAL\n", NAMES)
    private_orthanc.stop()
    made = []
    import medclf_core.pacs.evaluate as module

    class Spy(module.StagedDataset):
        def __init__(self):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(module, "StagedDataset", Spy)
    with pytest.raises(PacsError, match="could not be reached"):
        stage_studies(conn, rows)
    assert made and not made[0].folder.exists()


def test_the_staged_names_give_the_study_as_the_group():
    """A study's images are resampled together (the Evaluate page passes STUDY_PATTERN as the group pattern)."""
    from medclf_core.data.split import group_key

    assert group_key("NORMAL/line012-3.dcm", STUDY_PATTERN) == "line012"
    assert group_key("PNEUMONIA/line012-0.dcm", STUDY_PATTERN) == group_key("NORMAL/line012-3.dcm", STUDY_PATTERN)
    assert group_key("NORMAL/line013-0.dcm", STUDY_PATTERN) == "line013"
