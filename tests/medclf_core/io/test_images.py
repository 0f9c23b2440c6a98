"""medclf_core.io.images and .dicom: decode by content, every mode, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medclf_core.errors import ImageError
from medclf_core.io.dicom import looks_like_dicom
from medclf_core.io.images import load_image, to_model_input
from medclf_core.io.pixels import to_uint8


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


GRADIENT = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))


def _variants():
    gray = Image.fromarray(GRADIENT)
    rgb = Image.fromarray(np.stack([GRADIENT, GRADIENT[::-1], 255 - GRADIENT], axis=2))
    rgba = rgb.copy()
    rgba.putalpha(200)
    yield "png-L", _encode(gray, "PNG"), 2
    yield "png-RGB", _encode(rgb, "PNG"), 3
    yield "png-RGBA", _encode(rgba, "PNG"), 3
    yield "png-P", _encode(rgb.convert("P"), "PNG"), 3
    yield "png-I16", _encode(Image.fromarray((GRADIENT.astype(np.uint16) * 257)), "PNG"), 2
    yield "jpeg-RGB", _encode(rgb, "JPEG"), 3
    yield "jpeg-CMYK", _encode(rgb.convert("CMYK"), "JPEG"), 3
    yield "bmp", _encode(rgb, "BMP"), 3
    yield "tiff", _encode(gray, "TIFF"), 2
    yield "gif", _encode(gray, "GIF"), 2
    yield "rgb-of-gray", _encode(gray.convert("RGB"), "PNG"), 2  # colour container, gray content -> 2-D


@pytest.mark.parametrize("name,data,ndim", list(_variants()), ids=[v[0] for v in _variants()])
def test_decodes_every_mode_to_uint8(name, data, ndim):
    img = load_image(data)
    assert img.pixels.dtype == np.uint8
    assert img.pixels.shape[:2] == (48, 64)
    assert img.pixels.ndim == ndim
    assert img.pixels.max() > img.pixels.min()  # not blanked by a wrong conversion


def test_png_named_jpg_is_decoded_by_content(tmp_path):
    path = tmp_path / "scan.jpg"
    path.write_bytes(_encode(Image.fromarray(GRADIENT), "PNG"))
    assert load_image(path).source_format == "PNG"


def test_16bit_keeps_contrast():
    img = load_image(_encode(Image.fromarray((GRADIENT.astype(np.uint16) * 16)), "PNG"))
    assert img.pixels.min() == 0 and img.pixels.max() == 255
    assert any("16-bit" in n for n in img.notes)


def test_exif_rotation_is_applied():
    im = Image.fromarray(np.tile(np.arange(0, 240, 6, dtype=np.uint8), (20, 1)))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    img = load_image(_encode(im.convert("RGB"), "JPEG", exif=exif.tobytes()))
    assert img.pixels.shape[:2] == (40, 20)


def test_multiframe_tiff_uses_first_frame_and_says_so():
    frames = [Image.fromarray(np.full((10, 10), v, np.uint8)) for v in (10, 200)]
    for f in frames:
        f.putpixel((0, 0), 30)  # not blank (blank images are refused)
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    img = load_image(buf.getvalue())
    assert int(img.pixels.mean()) == 10
    assert any("first frame" in n for n in img.notes)


@pytest.mark.parametrize("data,fragment", [
    (b"", "empty"),
    (b"hello, this is text", "not an image"),
    (b"%PDF-1.4\n%...", "PDF"),
    (_encode(Image.fromarray(GRADIENT), "PNG")[:60], "damaged"),
], ids=["empty", "text", "pdf", "truncated"])
def test_bad_inputs_raise_image_error_with_message(data, fragment):
    with pytest.raises(ImageError, match=fragment):
        load_image(data)


def test_a_truncated_jpeg_says_so_in_plain_words(caplog):
    """The walk-through's truncated_chest.jpeg read "(OSError: image file is truncated (12 bytes not processed))":
    the user reads what is wrong and what to do; the decoder's words go to the server log only."""
    whole = _encode(Image.fromarray(GRADIENT).resize((256, 256)), "JPEG", quality=95)
    with caplog.at_level("WARNING", logger="medclf"), pytest.raises(ImageError) as info:
        load_image(whole[: len(whole) * 3 // 4])
    assert str(info.value) == ("The JPEG file is damaged or incomplete (it ends before the image data does); "
                               "export it again.")
    assert "image file is truncated" in caplog.text  # the technical detail, for whoever reads the log
    # other damage keeps a plain message of its own, without the exception's name
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    png = bytearray(_encode(Image.fromarray(noise), "PNG"))
    png[len(png) // 2:len(png) // 2 + 64] = bytes(64)  # zeroed data in the middle: "broken data stream"
    with pytest.raises(ImageError) as info:
        load_image(bytes(png))
    assert str(info.value) == "The PNG file is damaged (its image data cannot be decoded); export it again."


def test_missing_file():
    with pytest.raises(ImageError, match="not found"):
        load_image("/nonexistent/file.png")


def test_decompression_bomb_refused(monkeypatch):
    import medclf_core.io.images as images
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        images.load_image(_encode(Image.fromarray(np.zeros((100, 100), np.uint8)), "PNG"))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape", [(30, 50), (30, 50, 3), (30, 50, 4), (30, 50, 1), (500, 20)])
def test_to_model_input_shapes(shape, channels):
    arr = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    out = to_model_input(arr, 24, channels)
    assert out.shape == (24, 24, channels) and out.dtype == np.uint8


def test_to_model_input_gray_to_rgb_repeats_channels():
    out = to_model_input(GRADIENT, 16, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_to_uint8_constant_and_nan():
    assert to_uint8(np.full((4, 4), 7.0)).max() == 0
    out = to_uint8(np.array([[0.0, np.nan], [1.0, 2.0]]))
    assert out.dtype == np.uint8 and out[1, 1] == 255


def test_dicom_samples_decode(dicom_samples):
    assert dicom_samples, "committed DICOM samples are missing"
    for path in dicom_samples:
        assert looks_like_dicom(path.read_bytes())
        img = load_image(path)
        assert img.source_format == "DICOM" and img.pixels.dtype == np.uint8
        assert img.pixels.std() > 5, path.name


def test_dicom_monochrome1_is_inverted(dicom_samples):
    cr = next(p for p in dicom_samples if "RG1" in p.name)
    img = load_image(cr)
    assert any("MONOCHROME1" in n for n in img.notes)
    h, w = img.pixels.shape
    # Lung fields (dark on a correctly shown chest film) are darker than the spine column.
    lungs = img.pixels[h // 3: 2 * h // 3, w // 5: 2 * w // 5].mean()
    spine = img.pixels[h // 3: 2 * h // 3, int(0.47 * w): int(0.53 * w)].mean()
    assert lungs < spine


def test_dicom_multiframe_uses_middle_frame(dicom_samples):
    multi = next(p for p in dicom_samples if "emri" in p.name)
    img = load_image(multi)
    assert any("frame 6" in n for n in img.notes)
    assert load_image(multi, frame=0).notes[0].endswith("frame 1 used")


def test_dicom_without_pixels(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "sr.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName = "Doe^Jane"
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match="no pixel data") as info:
        load_image(tmp_path / "sr.dcm")
    assert "Doe" not in str(info.value)
