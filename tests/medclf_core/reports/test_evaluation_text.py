"""medclf_core.reports.evaluation_text: the Evaluate page's counts, misclassified and refused images.

The walk-through's upload (chest model, threshold 0.77): 15 files, one not an image, 14 read, two of them refused
(a brain MRI photo and a DICOM of a 64-year-old). The page said "15 of 15 images read and classified" and listed
both refused images as ordinary mistakes with a prediction."""

from __future__ import annotations

import numpy as np

from medclf_core.reports import evaluation_text as et

NAMES = ["NORMAL", "PNEUMONIA"]


def _walk() -> dict:
    """14 read images: #0 a brain photo labelled NORMAL at P 0.999 (refused), #1 a DICOM of an adult labelled
    PNEUMONIA at P 0.725 (refused), #2 a pneumonia film at P 0.746 (answered, wrong at 0.77), 11 right."""
    p1 = np.array([0.999, 0.725, 0.746, 0.1, 0.2, 0.05, 0.3, 0.01, 0.02, 0.9, 0.95, 0.99, 0.999, 0.85])
    y = np.array([0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    return {"files": [f"/up/{c}/f{i}.jpeg" for i, c in enumerate(y)], "rel": [f"f{i}.jpeg" for i in range(14)],
            "y_true": y, "probs": np.stack([1 - p1, p1], axis=1), "class_names": NAMES,
            "skipped": [{"file": "corrupt.png", "error": "not an image"}],
            "ood": [True, True] + [False] * 12,
            "ood_reason": ["it is not a chest X-ray (imaging-modality says MRI)", "patient age 64 is outside 1-5",
                           *[None] * 12]}


def test_every_count_is_true():
    c = et.image_counts(_walk())
    assert c == {"files": 15, "read": 14, "not_read": 1, "refused": 2, "answered": 12, "evaluated": 14}
    assert et.progress_done(c) == "14 of 15 files read and classified; 1 could not be read (listed below)."
    assert et.counts_sentence(c) == ("15 files: 14 read and evaluated, 1 could not be read. 2 of the 14 were "
                                     "refused (no finding shown), 12 answered.")
    clean = et.image_counts({"files": ["a", "b"], "skipped": []})  # no flags (not checked): none refused
    assert et.progress_done(clean) == "2 of 2 files read and classified."
    assert et.counts_sentence(clean) == "2 files: 2 read and evaluated."


def test_refused_images_are_listed_apart_not_as_mistakes():
    data = _walk()
    m = et.mistakes(data, threshold=0.77, positive=1)
    assert m["wrong"].tolist() == [2] and m["refused"].tolist() == [0, 1]
    assert m["n_answered"] == 12 and m["n_refused_wrong"] == 2  # the metrics over all images count 3 mistakes
    assert et.mistakes_caption(m, 12).startswith("1 of the 12 answered images is misclassified at the model's "
                                                 "threshold.")
    assert et.mistake_caption(data, m, 2, threshold=0.77, positive=1).startswith(
        "f2.jpeg: true PNEUMONIA, predicted NORMAL (P(PNEUMONIA) = 74.6%")
    rows = et.refused_rows(data, m)
    assert rows == [{"file": "f0.jpeg", "true class": "NORMAL", "reason": data["ood_reason"][0]},
                    {"file": "f1.jpeg", "true class": "PNEUMONIA", "reason": data["ood_reason"][1]}]
    words = et.refused_caption(m)
    assert words.startswith("2 images were refused: the app shows no finding") and "(2 of the 2 wrong" in words


def test_a_model_without_a_threshold_says_top_class_not_threshold():
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    data = {"files": ["a", "b", "c"], "rel": ["a", "b", "c"], "y_true": np.array([0, 2, 2]), "probs": p,
            "class_names": ["CT", "MRI", "XRAY"]}
    m = et.mistakes(data, threshold=None, positive=None)
    assert m["wrong"].tolist() == [1] and not len(m["refused"])
    words = et.mistakes_caption(m, 12)
    assert words.startswith("1 of 3 images is misclassified (the prediction is the most probable class)")
    assert "threshold" not in words
    assert et.mistake_caption(data, m, 1, threshold=None, positive=None) == "b: true XRAY, predicted MRI (P(MRI) = 50.0%)"
    none = et.mistakes({**data, "y_true": np.array([0, 1, 2])}, threshold=None, positive=None)
    assert et.mistakes_caption(none, 12) == "No image was misclassified (the prediction is the most probable class)."


def test_images_shown_with_a_caution_are_listed_right_or_wrong_with_the_reason():
    """Session 21: the page counted the cautioned images and never listed them. A refused image that the gate
    also called unfamiliar is refused, not listed again; an unfamiliar one without a reason gets the plain words."""
    data = {**_walk(), "unfamiliar": [True, False, True, True] + [False] * 10,
            "unfamiliar_reason": [None, None, "it is 12 x 12 pixels, enlarged", None] + [None] * 10}
    m = et.mistakes(data, threshold=0.77, positive=1)
    assert et.cautioned(data, m).tolist() == [2, 3]
    assert et.cautioned_rows(data, m) == [
        {"file": "f2.jpeg", "true class": "PNEUMONIA", "decision": "NORMAL", "right": False,
         "reason": "it is 12 x 12 pixels, enlarged"},
        {"file": "f3.jpeg", "true class": "NORMAL", "decision": "NORMAL", "right": True,
         "reason": "unlike this model's training images"}]
    assert et.cautioned_caption(data, m) == ("2 answered images were shown with a caution: 1 of them (50.0%) decided "
                                             "right, against 10 of the other 10 (100.0%).")
    none = {**_walk(), "unfamiliar": [None] * 14}  # a model without the tier
    assert not len(et.cautioned(none, m)) and et.cautioned_rows(none, m) == [] and et.cautioned_caption(none, m) == ""
    stored = {k: v for k, v in _walk().items() if k not in ("ood", "ood_reason")}  # the stored test split: no flags
    assert et.cautioned_rows(stored, et.mistakes(stored, threshold=0.77, positive=1)) == []


def test_one_cautioned_image_reads_as_one():
    """Walk-through, session 21: "1 of it (100.0%) decided right"."""
    data = {**_walk(), "unfamiliar": [False, False, False, True] + [False] * 10}
    m = et.mistakes(data, threshold=0.77, positive=1)
    assert et.cautioned_caption(data, m) == ("1 answered image was shown with a caution: it was decided right, "
                                             "against 10 of the other 11 (90.9%).")


def test_with_a_site_the_rule_names_the_sites_threshold():
    """Walk-through, session 21: "misclassified at the model's threshold" when the site's threshold decided."""
    m = et.mistakes(_walk(), threshold=0.77, positive=1, site="st-marys")
    assert m["rule"] == "at the threshold of site 'st-marys'"
    assert et.mistakes_caption(m, 12).startswith("1 of the 12 answered images is misclassified at the threshold of "
                                                 "site 'st-marys'.")
