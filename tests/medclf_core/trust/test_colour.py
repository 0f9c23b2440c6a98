"""medclf_core.trust.colour: a colour image is refused by a radiological model, a grayscale one (also stored as RGB,
also through a real JPEG round trip) is not, and a model without radiological modalities is not affected."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medclf_core.trust.colour import (COLOUR_MIN_CHROMA, COLOUR_REASON, DARK_LEVEL, colour_applies, colour_reason,
                                      mean_chroma)
from medclf_core.trust.verdict import verdict

MR = {"modalities": ["MR"]}
XRAY = {"modalities": ["CR", "DX"]}


def _gradient(side: int = 64) -> np.ndarray:
    """A grayscale ramp with a bright disc: a scan-like picture with many levels."""
    y, x = np.mgrid[:side, :side]
    g = (x * 3 + y) % 256
    g[(x - side / 2) ** 2 + (y - side / 2) ** 2 < (side / 4) ** 2] = 230
    return g.astype(np.uint8)


def _coloured(side: int = 64) -> np.ndarray:
    """Four flat colour quadrants over the ramp: a graphic or photograph's kind of colour."""
    rgb = np.repeat(_gradient(side)[..., None], 3, axis=2)
    h = side // 2
    rgb[:h, :h] = (200, 40, 40)
    rgb[:h, h:] = (40, 160, 60)
    rgb[h:, :h] = (30, 60, 200)
    return rgb


def _rgb_gray_with_noise(side: int = 64, levels: int = 3) -> np.ndarray:
    """R = G = B plus independent noise of up to ``levels`` per channel (what JPEG chroma noise looks like)."""
    rgb = np.repeat(_gradient(side)[..., None], 3, axis=2).astype(np.int16)
    rgb += np.random.default_rng(0).integers(-levels, levels + 1, rgb.shape, dtype=np.int16)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _jpeg_round_trip(rgb: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=70)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_mean_chroma_of_grayscale_colour_and_other_dtypes():
    grey = _gradient()
    assert mean_chroma(grey) == 0.0 and mean_chroma(grey[..., None]) == 0.0
    assert mean_chroma(np.repeat(grey[..., None], 3, axis=2)) == 0.0
    assert mean_chroma(_rgb_gray_with_noise()) < 7  # at most 2 x 3 levels
    assert mean_chroma(_coloured()) > 3 * COLOUR_MIN_CHROMA
    rgba = np.dstack([_coloured(), np.zeros((64, 64), np.uint8)])  # an alpha band is not a colour
    assert mean_chroma(rgba) == pytest.approx(mean_chroma(_coloured()))
    full = _coloured()
    full[0, 0], full[0, 1] = 0, 255  # full range 0-255: a float copy scaled by its own range keeps the values
    assert mean_chroma(full.astype(np.float32) / 255) == pytest.approx(mean_chroma(full), abs=1)
    big = np.full((2000, 2000, 3), 128, np.uint8)
    big[:, :1000] = (255, 0, 0)  # half of it pure red, half grey: the subsample sees the same half
    assert mean_chroma(big) == pytest.approx(127.5, abs=2)


def test_colour_image_refused_by_radiological_models_only():
    chroma = mean_chroma(_coloured())
    reason = colour_reason(MR, chroma)
    assert reason is not None and reason.startswith(COLOUR_REASON) and f"mean chroma {chroma:.0f}" in reason
    assert colour_reason(XRAY, chroma) is not None
    assert colour_reason({"modalities": ["CT", "MR", "CR", "DX"]}, chroma) is not None  # the modality model's card
    for grey in (_gradient(), np.repeat(_gradient()[..., None], 3, axis=2), _rgb_gray_with_noise(),
                 _jpeg_round_trip(_rgb_gray_with_noise())):
        assert colour_reason(MR, mean_chroma(grey)) is None
    assert colour_reason(None, chroma) is None and colour_reason({"modalities": ["US"]}, chroma) is None
    assert colour_reason({}, chroma) is None and colour_reason(MR, None) is None
    assert colour_applies(XRAY) and not colour_applies({"modalities": ["US"]}) and not colour_applies(None)
    assert colour_reason(MR, COLOUR_MIN_CHROMA) is not None and colour_reason(MR, COLOUR_MIN_CHROMA - 0.1) is None


def _on_black(side: int = 96) -> np.ndarray:
    """Mostly black, with a few small bright coloured blobs: a night sky or a fundus photograph on black."""
    rgb = np.zeros((side, side, 3), np.uint8)
    for k, colour in enumerate([(220, 150, 60), (90, 140, 230), (230, 90, 120)]):
        y, x = 10 + 30 * k, 15 + 25 * k
        rgb[y:y + 6, x:x + 6] = colour
    return rgb


def _scan_with_annotation(side: int = 96) -> np.ndarray:
    """A grayscale scan (disc on black, with JPEG-like noise) carrying a small yellow annotation arrow."""
    y, x = np.mgrid[:side, :side]
    disc = ((x - side / 2) ** 2 + (y - side / 2) ** 2 < (side / 3) ** 2) * (80 + (x + y) % 120)
    rgb = np.repeat(disc[..., None], 3, axis=2).astype(np.int16)
    rgb += np.random.default_rng(1).integers(-2, 3, rgb.shape, dtype=np.int16)
    rgb[20:23, 20:40] = (240, 230, 30)  # 60 pixels of the arrow's shaft
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_near_black_pixels_do_not_dilute_the_colour():
    photo = _on_black()
    lit_share = (photo.max(axis=2) >= DARK_LEVEL).mean()
    assert lit_share < 0.05  # over all pixels the mean chroma would be tiny ...
    assert float(np.mean(photo.max(axis=2) - photo.min(axis=2))) < COLOUR_MIN_CHROMA / 4
    assert mean_chroma(photo) > 3 * COLOUR_MIN_CHROMA  # ... over the lit ones it is a colour image
    assert colour_reason(MR, mean_chroma(photo)) is not None
    assert colour_reason(MR, mean_chroma(_scan_with_annotation())) is None  # a scan with a coloured arrow stays a scan
    assert colour_reason(MR, mean_chroma(_jpeg_round_trip(_scan_with_annotation()))) is None
    assert mean_chroma(np.zeros((16, 16, 3), np.uint8)) == 0.0  # all black: nothing lit, nothing coloured


def test_verdict_refuses_a_colour_image_with_the_reason():
    v = verdict(None, None, MR, chroma=mean_chroma(_coloured()))
    assert v["ood"] is True and v["ood_reason"].startswith(COLOUR_REASON) and v["ood_checks"] == ["colour"]
    v = verdict(None, None, MR, chroma=mean_chroma(_jpeg_round_trip(_rgb_gray_with_noise())))
    assert v["ood"] is None and v["ood_reason"] is None and v["ood_checks"] == ["colour"]  # no gate: not checked
    v = verdict(None, None, {"summary": "no modality declared"}, chroma=100.0)
    assert v["ood"] is None and v["ood_checks"] == []  # not a radiological card: the check does not run
    both = verdict(None, None, XRAY, {"Modality": "MR"}, chroma=100.0)
    assert both["ood"] is True and both["ood_checks"] == ["dicom_header", "colour"]
    assert both["ood_reason"].startswith("the DICOM header") and both["ood_reason"].endswith(colour_reason(XRAY, 100.0))
