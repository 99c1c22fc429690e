"""Which image formats the jobs read, how their files are named, and how they are opened.

Decoding is restricted to an allow-list of Pillow formats: bytes of any other format (EPS, which runs
Ghostscript, PDF, ...) are never handed to a Pillow plugin to decode, whatever their file name says.
``input.formats`` in a spec chooses from ``FORMAT_EXTENSIONS``; the default is ``DEFAULT_FORMATS``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow format name -> file extensions listed as input of that format.
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "WEBP": (".webp",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
    "PPM": (".ppm", ".pgm", ".pbm", ".pnm"),
    "TGA": (".tga",),
    "JPEG2000": (".jp2", ".j2k"),
}
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP")
# 16-bit greyscale modes; "I" (32-bit integers) too, as older Pillows opened 16-bit PNGs and some TIFFs are.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ORIENTATION = 0x0112  # the EXIF tag
# Single-channel modes whose values a label map can hold as they are ("P": palette indices, "1": 0/1).
LABEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")
_FLOAT = "image mode is F (32-bit floating point), which has no standard range; save it as 8 or 16 bit"


def extensions(formats: tuple[str, ...] | list[str] = DEFAULT_FORMATS) -> tuple[str, ...]:
    """The file extensions of ``formats`` (lower case, with the dot)."""
    return tuple(ext for name in formats for ext in FORMAT_EXTENSIONS[name])


# Leading bytes of formats, to name what a rejected file really is without handing it to a decoder.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (8, b"WEBP", "WEBP"),
    (0, b"%!PS", "EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"%PDF", "PDF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG2000"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypheic", "HEIC"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DDS"),
    (0, b"gimp xcf", "XCF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "XML"),
)


def sniff(data: bytes) -> str | None:
    """The format ``data`` starts like, by its signature alone (no decoder runs); None when unknown."""
    for offset, signature, name in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    if data[:1] == b"P" and data[1:2] in b"123456":
        return "PPM"
    return None


def open_image(
    data: bytes, formats: tuple[str, ...] | list[str] = DEFAULT_FORMATS, draft_size: int | None = None
) -> Image.Image:
    """Decode ``data`` fully with the plugins of ``formats`` only, turned as its EXIF orientation says
    (as viewers show it). Raises ValueError naming the real format of anything else.

    With ``draft_size`` a JPEG is decoded at the smallest of 1/1, 1/2, 1/4 or 1/8 of its size that is
    still at least ``draft_size`` on each side (the decoder's own DCT scaling, Pillow's draft mode): far
    fewer pixels to decode when the picture is resized down afterwards. Other formats decode in full."""
    unknown = [name for name in formats if name not in FORMAT_EXTENSIONS]
    if unknown:  # the spec checks this too; here so that no caller can enable EPS, PDF, ... by name
        raise ValueError(f"input.formats names {', '.join(unknown)}; known: {', '.join(FORMAT_EXTENSIONS)}")
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=list(formats))
    except UnidentifiedImageError:
        # Named by signature, not by an unrestricted Image.open: that would run the header parser of
        # every Pillow plugin (EPS, PSD, ...) on untrusted bytes, which is what the allow-list prevents.
        real = sniff(data)
        allowed = ", ".join(formats)
        if real is not None and real not in formats:
            message = f"file is {real}, not an allowed format ({allowed}); input.formats lists what is read"
            raise ValueError(message) from None
        raise ValueError(f"cannot decode image: not a readable {allowed} file") from None
    if draft_size is not None and img.format == "JPEG":
        img.draft(None, (draft_size, draft_size))
    img.load()  # decodes fully, so truncated files fail here and not later
    if img.getexif().get(ORIENTATION, 1) != 1:  # read after load: a PNG may keep its EXIF after the pixels
        img = ImageOps.exif_transpose(img)
    return img


def open_rgb(
    data: bytes, formats: tuple[str, ...] | list[str], convert_to_rgb: bool, draft_size: int | None = None
) -> Image.Image:
    """``open_image`` then ``to_rgb``: an RGB image as a viewer shows it."""
    return to_rgb(open_image(data, formats, draft_size), convert_to_rgb)


def to_rgb(img: Image.Image, convert: bool) -> Image.Image:
    """An RGB image; other modes only when ``convert`` (input.convert_to_rgb), 16-bit ones scaled.

    A 16-bit RGB PNG already opens as RGB in Pillow (13.0), each channel its high byte (v >> 8, at most 1
    below v / 257 rounded): its full values are gone by then, so it is taken as it is."""
    if img.mode == "RGB":
        return img
    if img.mode == "F":  # refused whatever convert says: converting could not help
        raise ValueError(_FLOAT)
    if not convert:
        raise ValueError(f"image mode is {img.mode}, expected RGB (set input.convert_to_rgb to convert)")
    if img.mode in SIXTEEN_BIT_MODES:
        return to_grey(img).convert("RGB")
    return img.convert("RGB")


def to_grey(img: Image.Image) -> Image.Image:
    """An 8-bit greyscale (L) image, for sketches. 16-bit values are scaled to 8 bits (v / 257, rounded);
    Pillow's own conversion clips them at 255, which turns a 16-bit photo almost white."""
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(f"image mode is {img.mode} with values outside 0..65535; only 8 and 16 bit are read")
        # (v + 128) // 257 is v / 257 rounded half up, in integers (v / 257 is never exactly k + 0.5).
        return Image.fromarray(((values + 128) // 257).astype(np.uint8))  # 2-D uint8: mode L
    if img.mode == "F":
        raise ValueError(_FLOAT)
    return img.convert("L")


def open_labels(data: bytes, formats: tuple[str, ...] | list[str] = DEFAULT_FORMATS) -> Image.Image:
    """A label map (a class index per pixel), turned as its EXIF orientation says. Its values are labels:
    read as they are, never scaled (a 16-bit map holding 0..18 stays 0..18)."""
    img = open_image(data, formats)
    if img.mode not in LABEL_MODES:
        raise ValueError(f"a label map must be single-channel (mode L or P), got mode {img.mode}")
    return img

