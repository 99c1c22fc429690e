"""Pixels as the user sees them: EXIF orientation, 16-bit images scaled rather than clipped, and only
allowed formats ever handed to a decoder."""

import io

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from pipeline.decode import decode_image
from pipeline.image_formats import open_image, sniff
from pipeline.task_inputs import segmentation_input, sketch_input

RNG = np.random.default_rng(5)
PIXELS = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
PIXELS[:8, :16] = (255, 0, 0)  # a red block in the top-left corner, so a turn is visible


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(Image.fromarray(pixels), "PNG", exif=exif)


@pytest.mark.parametrize(
    "orientation,as_shown",
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),  # upside down
        (6, lambda a: np.rot90(a, -1)),  # a phone held upright: shown turned 90 degrees clockwise
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_is_applied(orientation, as_shown):
    decoded = decode_image(with_orientation(PIXELS, orientation), 32, False, False)
    np.testing.assert_array_equal(decoded, as_shown(PIXELS))


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    data = encoded(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    with pytest.raises(ValueError, match="image mode is I;16, expected RGB"):
        decode_image(data, 32, False, False)
    decoded = decode_image(data, 32, False, True)
    expected = np.floor(ramp.astype(np.float64) / 257 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(decoded, np.repeat(expected[..., None], 3, axis=2))
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255 and decoded[16, 0, 0] == 128
    # What Pillow's own conversion gives: nearly everything white.
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) == 255).mean() > 0.99
    sketch = sketch_input(data, 32)
    np.testing.assert_allclose(sketch[0], expected / 255, rtol=0, atol=1e-7)


def test_floating_point_images_are_refused_with_the_reason():
    data = encoded(Image.fromarray(np.full((32, 32), 0.5, np.float32), "F"), "TIFF")
    with pytest.raises(ValueError, match="mode is F \\(32-bit floating point\\)"):
        decode_image(data, 32, False, True, formats=("TIFF",))


def test_bytes_of_other_formats_are_refused_by_their_real_format(monkeypatch):
    def no_ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was invoked")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    image = Image.fromarray(PIXELS)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n%%EOF\n"
    files = {"GIF": encoded(image, "GIF"), "TIFF": encoded(image, "TIFF"), "EPS": eps, "PDF": b"%PDF-1.4\n%%EOF\n"}
    for real, data in files.items():
        assert sniff(data) == real
        with pytest.raises(ValueError, match=f"file is {real}, not an allowed format \\(JPEG, PNG, WEBP, BMP\\)"):
            decode_image(data, 32, False, False)  # as if it had been named face.png
    np.testing.assert_array_equal(decode_image(files["TIFF"], 32, False, False, formats=("PNG", "TIFF")), PIXELS)
    gif = decode_image(files["GIF"], 32, False, True, formats=("GIF",))  # a palette: converted on request
    assert gif.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="cannot decode image: not a readable PNG file"):
        decode_image(b"\x00\x01 nothing known", 32, False, False, formats=("PNG",))


def test_an_allowed_but_broken_file_says_why():
    good = encoded(Image.fromarray(PIXELS), "PNG")
    with pytest.raises(ValueError, match="cannot decode image: OSError"):
        decode_image(good[: len(good) // 2], 32, False, False)
    with pytest.raises(ValueError, match="empty file"):
        open_image(b"")


def test_label_maps_are_read_as_labels_and_turned_like_photos():
    labels = (np.arange(32 * 32) % 19).astype(np.uint8).reshape(32, 32)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(Image.fromarray(labels, "L"), "PNG", exif=exif)
    one_hot = segmentation_input(data, 32)
    np.testing.assert_array_equal(one_hot.argmax(0), np.rot90(labels, -1))
    sketch = sketch_input(data, 32)
    np.testing.assert_allclose(sketch[0], np.rot90(labels, -1) / 255, rtol=0, atol=1e-7)
