import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from operators.degradations import triangle_mask
from pipeline.core.images import LABEL_COLOUR, LABEL_HEIGHT, contact_sheet, encode_image
from pipeline.restore.tasks import degrade, record_seed
from pipeline.translate.steps import segmentation_input, sketch_input


def smooth_image(size=32, seed=0):
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    return np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.uint8)


def png(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_record_seeds_depend_on_key_and_job_seed_only():
    assert record_seed("a/1.png", 0) == record_seed("a/1.png", 0)
    assert len({record_seed("a/1.png", 0), record_seed("a/2.png", 0), record_seed("a/1.png", 1)}) == 3
    assert 0 <= record_seed("x", 7) < 2**63


def test_colorization_input_is_the_official_grey():
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 255  # pure red
    grey = degrade("colorization", image, "k", 0)
    assert grey.shape == (8, 8, 3) and (grey == 29).all()
    assert (degrade("colorization", image, "k", 0, grey_weights="bt601") == 76).all()


def test_noise_is_per_key_and_reproducible():
    image = np.full((64, 64, 3), 128, np.uint8)
    a = degrade("denoise", image, "a.png", 5)
    assert np.array_equal(a, degrade("denoise", image, "a.png", 5))
    assert not np.array_equal(a, degrade("denoise", image, "b.png", 5))
    assert (a.astype(float) - 128).std() == pytest.approx(25.5, rel=0.05)  # sqrt(0.01) * 255
    sp = degrade("denoise", image, "a.png", 5, noise="salt_and_pepper", amount=0.1)
    changed = sp != 128
    assert set(np.unique(sp[changed]).tolist()) == {0, 255}
    assert changed.mean() == pytest.approx(0.1, abs=0.02)


def test_inpainting_blacks_out_the_triangle_only():
    image = smooth_image(256)
    out = degrade("inpainting", image, "k", 0, corner_a_x=220, corner_b_x=70)
    mask = triangle_mask(256, 220, 70).numpy()
    assert (out[mask] == 0).all() and np.array_equal(out[~mask], image[~mask])
    drawn = [degrade("inpainting", image, f"k{i}", 0) for i in range(8)]
    assert len({d.tobytes() for d in drawn}) > 1  # corners drawn per record, as in training
    assert np.array_equal(drawn[3], degrade("inpainting", image, "k3", 0))


def test_super_resolution_input_loses_more_detail_with_a_larger_factor():
    image = smooth_image(64)
    two, eight = degrade("super_resolution", image, "k", 0, factor=2), degrade("super_resolution", image, "k", 0, factor=8)
    assert two.shape == eight.shape == (64, 64, 3)

    def error(x):
        return np.abs(x.astype(float) - image).mean()

    assert error(two) < error(eight)
    assert error(two) < 8
    with pytest.raises(ValueError, match="unknown restoration task 'deblur'"):
        degrade("deblur", image, "k", 0)


def test_translation_inputs():
    sketch = np.zeros((16, 16, 3), np.uint8)
    sketch[:, 8:] = 255
    x = sketch_input(png(sketch), 16)
    assert x.shape == (1, 16, 16) and x.dtype == np.float32
    assert x[0, 0, 0] == 0.0 and x[0, 0, 15] == 1.0

    labels = np.array([[0, 1], [2, 18]], np.uint8)
    onehot = segmentation_input(png(labels, "L"), 4)
    assert onehot.shape == (19, 4, 4) and (onehot.sum(0) == 1).all()
    assert onehot.argmax(0).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 18, 18], [2, 2, 18, 18]]
    with pytest.raises(ValueError, match=r"label map holds label 19, outside 0..18"):
        segmentation_input(png(np.full((4, 4), 19, np.uint8), "L"), 4)
    with pytest.raises(ValueError, match="must be single-channel"):
        segmentation_input(png(sketch), 16)


def test_image_encoding_and_contact_sheet():
    image = smooth_image(32)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(image, "png")))), image)
    for fmt in ("jpeg", "webp"):
        decoded = np.asarray(Image.open(io.BytesIO(encode_image(image, fmt, quality=90))).convert("RGB"))
        assert decoded.shape == image.shape and np.abs(decoded.astype(float) - image).mean() < 6

    red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    sheet = np.asarray(Image.open(io.BytesIO(contact_sheet([[red, blue], [blue]], tile=10, gap=2))))
    assert sheet.shape == (2 * 12 + 2, 2 * 12 + 2, 3)
    assert sheet[5, 5].tolist() == [255, 0, 0] and sheet[5, 17].tolist() == [0, 0, 255]
    assert sheet[17, 5].tolist() == [0, 0, 255] and sheet[17, 17].tolist() == [255, 255, 255]  # empty cell


def test_contact_sheet_rows_carry_their_key_and_their_pictures_titles():
    red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    labels = [("face_00.png", ["clean", "restored"]), ("a/very/long/key/\u9854.png", ["input"])]
    tile, gap, key_width = 32, 2, 72  # 12 characters of the bitmap font a line
    plain = np.asarray(Image.open(io.BytesIO(contact_sheet([[red, blue], [blue]], tile=tile, gap=gap))))
    sheet = np.asarray(Image.open(io.BytesIO(
        contact_sheet([[red, blue], [blue]], tile=tile, gap=gap, labels=labels, key_width=key_width)
    )))
    # Each row gains a title strip; the key column comes before the pictures.
    assert plain.shape == (2 * 34 + 2, 2 * 34 + 2, 3)
    assert sheet.shape == (plain.shape[0] + 2 * LABEL_HEIGHT, plain.shape[1] + key_width + gap, 3)
    left, row = gap + key_width + gap, LABEL_HEIGHT + tile + gap
    # The pictures sit under their titles, where the unlabelled sheet has them, shifted.
    np.testing.assert_array_equal(sheet[gap + LABEL_HEIGHT : gap + LABEL_HEIGHT + tile, left : left + 2 * tile + gap],
                                  plain[gap : gap + tile, gap : gap + 2 * tile + gap])
    np.testing.assert_array_equal(sheet[gap + row + LABEL_HEIGHT : gap + row + LABEL_HEIGHT + tile, left : left + tile],
                                  plain[gap + tile + gap : gap + 2 * tile + gap, gap : gap + tile])

    def inked(top, bottom, x0, x1):
        return int((sheet[top:bottom, x0:x1] != 255).any(axis=2).sum())

    assert inked(gap, gap + LABEL_HEIGHT, left, left + tile) > 0  # "clean"
    assert inked(gap, gap + LABEL_HEIGHT, left + tile + gap, left + 2 * tile + gap) > 0  # "restored"
    assert inked(gap + row, gap + row + LABEL_HEIGHT, left + tile + gap, sheet.shape[1]) == 0  # no picture, no title
    titles = sheet[gap : gap + LABEL_HEIGHT]
    assert not np.array_equal(titles[:, left : left + tile], titles[:, left + tile + gap : left + 2 * tile + gap])
    # Keys: the first fits one line; the second (21 characters) wraps onto a second, its CJK character as '?'.
    line = 12
    assert inked(gap, gap + line, gap, gap + key_width) > 0 and inked(gap + line, gap + row, gap, gap + key_width) == 0
    assert inked(gap + row + line, gap + row + 2 * line, gap, gap + key_width) > 0
    assert inked(gap + row + 2 * line, gap + 2 * row, gap, gap + key_width) == 0
    font = ImageFont.load_default_imagefont()
    for top, text in [(gap, "face_00.png"), (gap + row + line, "key/?.png")]:
        expected = Image.new("RGB", (key_width, line), "white")
        ImageDraw.Draw(expected).text((0, 1), text, fill=LABEL_COLOUR, font=font)
        np.testing.assert_array_equal(sheet[top : top + line, gap : gap + key_width], np.asarray(expected))
