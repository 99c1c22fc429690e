"""input.fast_jpeg: JPEGs decoded at a reduced scale by the JPEG decoder itself, then resized."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.core.decode import decode_image
from pipeline.core.image_formats import open_image
from pipeline.inversion.spec import InversionSpec


def smooth_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A seeded picture with detail at several scales, smooth enough for JPEG to keep it well."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        waves = sum(rng.uniform(0.2, 1) * np.sin(2 * np.pi * (rng.uniform(1, 12) * x + rng.uniform(1, 12) * y + rng.uniform()))
                    for _ in range(6))
        channels.append(waves)
    picture = np.stack(channels, -1)
    picture = (picture - picture.min()) / (picture.max() - picture.min())
    return (picture * 255).round().astype(np.uint8)


def jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.mark.parametrize(
    "stored, size, decoded",
    [((1024, 1024), 256, (256, 256)), ((1000, 700), 256, (500, 350)), ((300, 300), 256, (300, 300)),
     ((2048, 2048), 256, (256, 256)), ((4096, 4096), 256, (512, 512)), ((200, 200), 256, (200, 200))],
)
def test_a_jpeg_is_decoded_at_the_smallest_scale_still_as_large_as_the_input(stored, size, decoded):
    width, height = stored
    data = jpeg(np.zeros((height, width, 3), np.uint8))
    assert open_image(data, draft_size=size).size == decoded  # 1/8 is the decoder's smallest scale
    assert open_image(data).size == stored


def test_fast_jpeg_pixels_are_the_full_decode_averaged():
    pixels = smooth_photo(1024, 1024)
    data = jpeg(pixels)
    fast = decode_image(data, 256, True, False, fast_jpeg=True)
    exact = decode_image(data, 256, True, False)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)
    box = full.reshape(256, 4, 256, 4, 3).mean((1, 3))  # what a 1/4-scale DCT decode approximates
    assert fast.shape == exact.shape == (256, 256, 3)
    assert psnr(fast, box) > 40 and psnr(fast, exact) > 40
    assert not np.array_equal(fast, exact)  # a different decode: which is why it is off by default


def test_fast_jpeg_leaves_other_formats_and_small_jpegs_as_they_were():
    pixels = smooth_photo(128, 128, seed=1)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    np.testing.assert_array_equal(
        decode_image(png.getvalue(), 64, True, False, fast_jpeg=True), decode_image(png.getvalue(), 64, True, False)
    )
    small = jpeg(pixels[:100, :100])  # under twice the input size: no reduced scale exists
    np.testing.assert_array_equal(decode_image(small, 64, True, False, fast_jpeg=True), decode_image(small, 64, True, False))


def test_fast_jpeg_still_turns_a_photo_as_its_exif_says():
    pixels = np.zeros((256, 512, 3), np.uint8)
    pixels[:64, :128] = (255, 0, 0)  # the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned clockwise: the corner goes to the top right
    data = jpeg(pixels, exif=exif)
    fast = decode_image(data, 64, True, False, fast_jpeg=True)
    exact = decode_image(data, 64, True, False)
    assert psnr(fast, exact) > 30
    red = fast[..., 0].astype(int) - fast[..., 1]
    assert red[:8, -8:].min() > 200 and red[-8:, :8].max() < 50


def test_fast_jpeg_needs_resize_and_keeps_old_outputs_fingerprint():
    def spec(**inp):
        return InversionSpec.model_validate(
            {"input": {"uri": "s3://bucket/faces/", **inp}, "model": {"checkpoint": "s3://bucket/e2style.pt"},
             "output": {"uri": "s3://bucket/out/"}}
        )

    with pytest.raises(ValueError, match="fast_jpeg decodes JPEGs at a reduced size for resizing: set resize: true"):
        spec(fast_jpeg=True)
    # The fingerprint of this spec before fast_jpeg existed: outputs written then still resume.
    assert spec(resize=True).output_fingerprint() == "cb5b05f7f35cc7a82606f0e903f906741cea1bff60807e3089508b5651b84f3c"
    assert spec(resize=True, fast_jpeg=True).output_fingerprint() != spec(resize=True).output_fingerprint()
