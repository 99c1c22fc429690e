"""Pixels as the user sees them: EXIF orientation applied, 16-bit images scaled rather than clipped, and
only allowed formats ever handed to a Pillow plugin."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from helpers import make_image_folder
from pipeline.core.decode import decode_image, read_and_decode
from pipeline.core.image_formats import open_image, open_rgb, sniff, to_rgb
from pipeline.core.shards import list_shards
from pipeline.translate.steps import segmentation_input, sketch_input

RNG = np.random.default_rng(5)
PIXELS = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
PIXELS[:8, :16] = (255, 0, 0)  # a red block in the top-left corner, so any turn or flip shows
RAMP16 = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)  # 0 .. 65535


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def with_orientation(image: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(image, fmt, exif=exif)


def to_8_bit(values: np.ndarray) -> np.ndarray:
    """The expected scaling, written independently of the code under test: v / 257 rounded."""
    return np.floor(values.astype(np.float64) / 257 + 0.5).astype(np.uint8)


def png_16_bit_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written chunk by chunk (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# How a viewer shows the stored pixels for each EXIF orientation (numpy rows are y, columns x).
AS_SHOWN = {
    1: lambda a: a,
    3: lambda a: np.rot90(a, 2),  # upside down
    6: lambda a: np.rot90(a, -1),  # a phone held upright: the stored picture is shown turned clockwise
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(orientation, fmt):
    data = with_orientation(Image.fromarray(PIXELS), orientation, fmt)
    stored = np.asarray(Image.open(io.BytesIO(data)))  # what Pillow reads, before any turn
    decoded = decode_image(data, 32, False, False)
    np.testing.assert_array_equal(decoded, AS_SHOWN[orientation](stored))
    if fmt == "PNG":  # lossless: the exact pixels, turned
        np.testing.assert_array_equal(decoded, AS_SHOWN[orientation](PIXELS))


def test_a_turned_non_square_photo_is_checked_at_its_shown_size():
    wide = np.zeros((32, 48, 3), np.uint8)
    data = with_orientation(Image.fromarray(wide), 6)  # stored 48 wide, shown 48 tall
    with pytest.raises(ValueError, match="image is 32x48, expected 32x32"):
        decode_image(data, 32, False, False)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    data = encoded(Image.fromarray(RAMP16), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # how Pillow 13 opens a 16-bit grey PNG
    # Pillow's own conversion clips at 255: nearly everything white. This is the bug being guarded.
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) == 255).mean() > 0.99
    with pytest.raises(ValueError, match=r"image mode is I;16, expected RGB \(set input.convert_to_rgb to convert\)"):
        decode_image(data, 32, False, False)
    decoded = decode_image(data, 32, False, True)
    expected = to_8_bit(RAMP16)
    np.testing.assert_array_equal(decoded, np.repeat(expected[..., None], 3, axis=2))
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255 and decoded[16, 0, 0] == 128
    np.testing.assert_array_equal(sketch_input(data, 32)[0], expected.astype(np.float32) / 255)


def test_every_sixteen_bit_value_scales_to_its_nearest_eight_bit_value():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    data = encoded(Image.fromarray(values), "PNG")
    decoded = open_rgb(data, ("PNG",), True)
    np.testing.assert_array_equal(np.asarray(decoded)[..., 0], to_8_bit(values))


def test_integer_images_holding_sixteen_bit_values_are_scaled_and_wider_ones_refused():
    as_int32 = Image.fromarray(RAMP16.astype(np.int32))
    assert as_int32.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb(as_int32, True))[..., 1], to_8_bit(RAMP16))
    tiff = encoded(as_int32, "TIFF")
    np.testing.assert_array_equal(decode_image(tiff, 32, False, True, formats=("TIFF",))[..., 2], to_8_bit(RAMP16))
    too_wide = Image.fromarray(np.full((32, 32), 70000, np.int32))
    with pytest.raises(ValueError, match="values outside 0..65535"):
        to_rgb(too_wide, True)


def test_sixteen_bit_rgb_png_opens_as_its_high_bytes():
    # Pillow 13 opens a 16-bit RGB PNG as 8-bit RGB, each value its high byte: pinned here, so a Pillow
    # that starts handing over the 16-bit values is noticed (and scaled like grey).
    pixels = np.stack([RAMP16, RAMP16[::-1], np.full_like(RAMP16, 25828)], axis=-1)
    decoded = decode_image(png_16_bit_rgb(pixels), 32, False, False)
    np.testing.assert_array_equal(decoded, (pixels >> 8).astype(np.uint8))
    assert np.abs(decoded.astype(int) - to_8_bit(pixels)).max() <= 1  # never clipped, at most 1 below


def test_floating_point_images_are_refused_with_the_reason():
    data = encoded(Image.fromarray(np.full((32, 32), 0.5, np.float32), "F"), "TIFF")
    for convert in (False, True):
        with pytest.raises(ValueError, match=r"mode is F \(32-bit floating point\), which has no standard range"):
            decode_image(data, 32, False, convert, formats=("TIFF",))
    with pytest.raises(ValueError, match=r"mode is F"):
        sketch_input(data, 32, formats=("TIFF",))


def test_bytes_of_other_formats_are_refused_by_their_real_format(monkeypatch):
    plugin_calls = []

    def recorded(name):
        def call(*args, **kwargs):
            plugin_calls.append(name)
            raise AssertionError(f"{name} ran")

        return call

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", recorded("Ghostscript"))
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)  # as where Ghostscript is installed
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", recorded("EpsImageFile._open"))
    image = Image.fromarray(PIXELS)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n0 0 moveto 32 32 lineto stroke\nshowpage\n%%EOF\n"
    files = {"GIF": encoded(image, "GIF"), "TIFF": encoded(image, "TIFF"), "EPS": eps, "PDF": encoded(image, "PDF")}
    for real, data in files.items():
        assert sniff(data) == real
        allowed = r"\(JPEG, PNG, WEBP, BMP\); input.formats"
        with pytest.raises(ValueError, match=rf"file is {real}, not an allowed format {allowed}"):
            decode_image(data, 32, False, False)  # as if the file had been named face.png
        with pytest.raises(ValueError, match=rf"file is {real}, not an allowed format"):
            sketch_input(data, 32)
        with pytest.raises(ValueError, match=rf"file is {real}, not an allowed format"):
            segmentation_input(data, 32)
    with pytest.raises(ValueError, match="input.formats names EPS"):  # not even by asking for it
        decode_image(eps, 32, False, False, formats=("PNG", "EPS"))
    assert plugin_calls == []
    # Enabled, the same bytes decode.
    np.testing.assert_array_equal(decode_image(files["TIFF"], 32, False, False, formats=("PNG", "TIFF")), PIXELS)
    gif = Image.open(io.BytesIO(files["GIF"]))
    np.testing.assert_array_equal(
        decode_image(files["GIF"], 32, False, True, formats=("GIF",)), np.asarray(gif.convert("RGB"))
    )
    with pytest.raises(ValueError, match="image mode is P, expected RGB"):  # a palette: converted on request
        decode_image(files["GIF"], 32, False, False, formats=("GIF",))
    with pytest.raises(ValueError, match="cannot decode image: not a readable PNG file"):
        decode_image(b"\x00\x01 nothing known", 32, False, False, formats=("PNG",))


def test_a_shard_rejects_a_disguised_file_and_reads_it_when_its_format_is_on(tmp_path):
    gif = encoded(Image.fromarray(PIXELS), "GIF")
    good = make_image_folder(tmp_path, 2, {"disguised.png": gif})
    (shard,) = list_shards(str(tmp_path), "images", 1000, {})
    decoded = read_and_decode(shard, 32, False, True, {})
    assert decoded.keys == good
    assert [(k, e) for k, _, e in decoded.rejects] == [
        ("disguised.png", "file is GIF, not an allowed format (JPEG, PNG, WEBP, BMP); input.formats lists what is read")
    ]
    allowed = read_and_decode(shard, 32, False, True, {}, formats=("PNG", "GIF"))
    assert sorted(allowed.keys) == sorted(good + ["disguised.png"]) and allowed.rejects == []


def test_an_allowed_but_broken_or_huge_file_says_why(monkeypatch):
    good = encoded(Image.fromarray(PIXELS), "PNG")
    with pytest.raises(ValueError, match="cannot decode image: OSError"):
        decode_image(good[: len(good) // 2], 32, False, False)  # truncated: fails at the full load
    with pytest.raises(ValueError, match="empty file"):
        open_image(b"")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32x32 is then over twice the limit: a bomb
    with pytest.raises(ValueError, match="cannot decode image: DecompressionBombError: Image size"):
        decode_image(good, 32, False, False)


def test_sketches_are_turned_like_photos():
    sketch = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
    for orientation, as_shown in AS_SHOWN.items():
        data = with_orientation(Image.fromarray(sketch, "L"), orientation)
        np.testing.assert_array_equal(sketch_input(data, 32)[0], as_shown(sketch).astype(np.float32) / 255)
    rgb = with_orientation(Image.fromarray(PIXELS), 6)  # a colour sketch: greyscale of the turned picture
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(np.rot90(PIXELS, -1))).convert("L"))
    np.testing.assert_array_equal(sketch_input(rgb, 32)[0], expected.astype(np.float32) / 255)


def test_label_maps_are_read_as_labels_and_turned_like_photos():
    labels = (np.arange(32 * 32) % 19).astype(np.uint8).reshape(32, 32)
    for orientation, as_shown in AS_SHOWN.items():
        data = with_orientation(Image.fromarray(labels, "L"), orientation)
        one_hot = segmentation_input(data, 32)
        assert one_hot.shape == (19, 32, 32) and (one_hot.sum(0) == 1).all()
        np.testing.assert_array_equal(one_hot.argmax(0), as_shown(labels))
    # A 16-bit label map keeps its labels: scaled like a photo, 0..18 would all become 0.
    sixteen = with_orientation(Image.fromarray(labels.astype(np.uint16)), 6)
    assert Image.open(io.BytesIO(sixteen)).mode == "I;16"
    np.testing.assert_array_equal(segmentation_input(sixteen, 32).argmax(0), np.rot90(labels, -1))
    # A palette image's values are its indices (how CelebAMask-HQ style maps are often saved).
    palette = Image.frombytes("P", (32, 32), labels.tobytes())
    palette.putpalette(RNG.integers(0, 256, 768, dtype=np.uint8).tobytes())
    np.testing.assert_array_equal(segmentation_input(encoded(palette, "PNG"), 32).argmax(0), labels)
    with pytest.raises(ValueError, match="label map holds label 19, outside 0..18"):
        segmentation_input(encoded(Image.fromarray(labels + 1, "L"), "PNG"), 32)
    with pytest.raises(ValueError, match="must be single-channel"):
        segmentation_input(encoded(Image.fromarray(PIXELS), "PNG"), 32)
