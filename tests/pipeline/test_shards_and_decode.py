import numpy as np
import pytest
from PIL import Image
import io

from helpers import bad_images, make_image_folder, png_bytes
from pipeline.core.decode import decode_image, read_and_decode
from pipeline.core.shards import InputError, list_shards


def test_folder_listing_is_sorted_sharded_and_keyed_by_relative_path(tmp_path):
    keys = make_image_folder(tmp_path, good=7)
    (tmp_path / "notes.txt").write_text("not an image")
    shards = list_shards(str(tmp_path), "images", 3, {})
    assert [len(s.records) for s in shards] == [3, 3, 1]
    assert [r.key for s in shards for r in s.records] == keys
    assert shards[0].records[0].uri == f"file://{tmp_path}/a/img_000.png"
    assert [s.name for s in shards] == ["shard-00000", "shard-00001", "shard-00002"]
    again = list_shards(str(tmp_path) + "/", "images", 3, {})
    assert [s.records for s in again] == [s.records for s in shards]


def test_glob_and_list_inputs(tmp_path):
    make_image_folder(tmp_path, good=4)
    by_glob = list_shards(f"{tmp_path}/b/*.png", "images", 10, {})
    assert [r.key for r in by_glob[0].records] == ["img_001.png", "img_003.png"]
    both = list_shards([f"{tmp_path}/a", f"{tmp_path}/b"], "images", 10, {})
    assert [r.key for r in both[0].records] == ["img_000.png", "img_001.png", "img_002.png", "img_003.png"]


def test_listing_errors_name_the_uri(tmp_path):
    with pytest.raises(InputError, match=f"input {tmp_path}/absent does not exist"):
        list_shards(str(tmp_path / "absent"), "images", 10, {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .jpg, .jpeg, .png, .webp, .bmp files found"):
        list_shards(str(tmp_path / "empty"), "images", 10, {})
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.png").write_bytes(png_bytes(0))
    with pytest.raises(InputError, match="two input files have the key 'same.png'"):
        list_shards([str(tmp_path / "x"), str(tmp_path / "y")], "images", 10, {})


def test_decode_matches_pil_and_applies_the_flags():
    data = png_bytes(3, size=48)
    with pytest.raises(ValueError, match="image is 48x48, expected 32x32"):
        decode_image(data, 32, resize=False, convert_to_rgb=False)
    resized = decode_image(data, 32, resize=True, convert_to_rgb=False)
    expected = np.asarray(Image.open(io.BytesIO(data)).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(resized, expected)
    grey = png_bytes(4, mode="L")
    with pytest.raises(ValueError, match="image mode is L, expected RGB"):
        decode_image(grey, 32, resize=False, convert_to_rgb=False)
    assert decode_image(grey, 32, resize=False, convert_to_rgb=True).shape == (32, 32, 3)


def test_bad_records_become_rejects_with_reasons(tmp_path):
    good = make_image_folder(tmp_path, good=3, bad=bad_images())
    (shard,) = list_shards(str(tmp_path), "images", 100, {})
    decoded = read_and_decode(shard, 32, False, False, {})
    assert decoded.keys == good and decoded.images.shape == (3, 32, 32, 3)
    reasons = {key: error for key, _, error in decoded.rejects}
    assert sorted(reasons) == sorted(bad_images())
    assert reasons["bad/empty.png"] == "empty file (0 bytes)"
    assert "cannot decode image" in reasons["bad/corrupt.png"]
    assert "cannot decode image" in reasons["bad/truncated.png"]
    assert reasons["bad/grey.png"].startswith("image mode is L")
    assert reasons["bad/rgba.png"].startswith("image mode is RGBA")
    assert reasons["bad/big.png"].startswith("image is 48x48")
    np.testing.assert_array_equal(decoded.images[0], np.asarray(Image.open(tmp_path / good[0])))


def test_a_file_deleted_after_listing_is_a_reject(tmp_path):
    make_image_folder(tmp_path, good=2)
    (shard,) = list_shards(str(tmp_path), "images", 100, {})
    (tmp_path / "b" / "img_001.png").unlink()
    decoded = read_and_decode(shard, 32, False, False, {})
    assert decoded.keys == ["a/img_000.png"]
    assert decoded.rejects[0][0] == "b/img_001.png" and "cannot read file" in decoded.rejects[0][2]


def test_decoding_with_threads_gives_the_same_records_in_the_same_order(tmp_path):
    from helpers import bad_images, make_image_folder

    folder = tmp_path / "in"
    make_image_folder(folder, good=9, bad=bad_images())
    (shard,) = list_shards(str(folder), "images", 100, {})
    one = read_and_decode(shard, 32, False, False, {})
    four = read_and_decode(shard, 32, False, False, {}, threads=4)
    assert (four.keys, four.sources, four.rejects) == (one.keys, one.sources, one.rejects)
    assert len(one.keys) == 9 and len(one.rejects) == len(bad_images())
    np.testing.assert_array_equal(four.images, one.images)
    retry = read_and_decode(shard, 32, False, False, {}, only=frozenset(one.keys[2:4]), threads=4)
    assert retry.keys == one.keys[2:4]
