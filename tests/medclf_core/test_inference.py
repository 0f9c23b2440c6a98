"""medclf_core.inference: thresholded decisions, per-file errors, dataset evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.errors import DatasetError
from medclf_core.images import load_image
from medclf_core.inference import Predictor, evaluate_folder


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor.from_run(trained_run)


def test_threshold_decides_binary_label(predictor):
    probs = np.array([[0.6, 0.4]])
    predictor.threshold = 0.3
    assert predictor.describe(probs[0])["label"] == "PNEUMONIA"
    predictor.threshold = 0.5
    assert predictor.describe(probs[0])["label"] == "NORMAL"


@pytest.mark.parametrize("kind", ["jpeg", "dicom", "png-rgba", "bad"])
def test_predict_files_every_input_kind(predictor, sample_images, dicom_samples, tmp_path, kind):
    from PIL import Image

    if kind == "jpeg":
        f = sample_images[0]
    elif kind == "dicom":
        f = dicom_samples[0]
    elif kind == "png-rgba":
        f = tmp_path / "x.png"
        Image.open(sample_images[0]).convert("RGBA").save(f)
    else:
        f = tmp_path / "bad.dcm"
        f.write_bytes(b"DICM" * 10)
    (res,) = predictor.predict_files([f])
    if kind == "bad":
        assert "error" in res and "label" not in res
    else:
        assert res["label"] in predictor.class_names
        assert sum(res["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_batch_equals_single(predictor, sample_images):
    imgs = [load_image(p).pixels for p in sample_images]
    batch = predictor.predict_images(imgs)
    singles = np.concatenate([predictor.predict_images([im]) for im in imgs])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_evaluate_folder(predictor, chest_sample):
    r = evaluate_folder(predictor, chest_sample, bootstrap=0)
    assert r["n"] == 80 and r["split"] == "all"


def test_evaluate_folder_rejects_unknown_classes(predictor, pattern_dataset):
    with pytest.raises(DatasetError, match="does not know"):
        evaluate_folder(predictor, pattern_dataset)
