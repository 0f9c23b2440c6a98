"""The colour check through the Predictor: measured on the original pixels (a one-channel model never sees the
colour), in predict, predict_files and a folder's predictions; tiny real Keras models, no stubs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medclf_core.inference.folder import predict_folder
from medclf_core.inference.predictor import Predictor
from medclf_core.trust.colour import COLOUR_REASON

BRAIN_CARD = {"name": "brain", "class_names": ["no", "yes"], "intended_use": {"modalities": ["MR"]}}
PLAIN_CARD = {"name": "plain", "class_names": ["no", "yes"]}


def _images():
    """(coloured, grayscale, RGB-encoded grayscale with a few levels of noise), 48 px."""
    rng = np.random.default_rng(0)
    grey = rng.integers(20, 230, (48, 48), dtype=np.uint8)
    colour = np.repeat(grey[..., None], 3, axis=2)
    colour[:24, :, 0], colour[24:, :, 2] = 250, 250
    noisy = np.clip(np.repeat(grey[..., None], 3, axis=2).astype(np.int16)
                    + rng.integers(-3, 4, (48, 48, 3)), 0, 255).astype(np.uint8)
    return colour, grey, noisy


@pytest.fixture(scope="module")
def model():
    from medclf_core.models.architectures import build_model

    return build_model("simple_cnn", 2, 32, 1)  # one channel: the prepared input is grayscale


def test_predict_refuses_colour_on_the_original_pixels(model):
    colour, grey, noisy = _images()
    rs = Predictor(model, BRAIN_CARD, tta=()).predict([colour, grey, noisy])
    assert rs[0]["ood"] is True and rs[0]["ood_reason"].startswith(COLOUR_REASON)
    assert all(r["ood"] is not True and r["ood_reason"] is None for r in rs[1:])
    assert all("colour" in r["ood_checks"] for r in rs)
    plain = Predictor(model, PLAIN_CARD, tta=()).predict([colour])[0]
    assert plain["ood"] is None and "colour" not in plain["ood_checks"]  # no radiological modality: unaffected


def test_predict_files_and_folder_carry_the_colour_check(model, tmp_path):
    colour, grey, noisy = _images()
    for cls, imgs in {"no": (grey, noisy), "yes": (colour,)}.items():
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i, a in enumerate(imgs):
            Image.fromarray(a).save(tmp_path / "data" / cls / f"{i}.png")
    p = Predictor(model, BRAIN_CARD, tta=())
    files = [tmp_path / "data" / "yes" / "0.png", tmp_path / "data" / "no" / "0.png", tmp_path / "data" / "no" / "1.png"]
    flags = [r["ood"] is True for r in p.predict_files(files)]
    assert flags == [True, False, False]
    out = predict_folder(p, tmp_path / "data", "all")
    refused = {rel.split("/")[0]: f for rel, f in zip(out["rel"], out["ood"], strict=True) if f}
    assert refused == {"yes": True}
    assert [r for r in out["ood_reason"] if r] and all(COLOUR_REASON in r for r in out["ood_reason"] if r)
