import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from helpers import png_bytes, write_image_parquet, write_tar
from pipeline.core.decode import read_and_decode
from pipeline.core.shards import InputError, list_shards


def test_webdataset_samples_are_grouped_by_key(tmp_path):
    write_tar(tmp_path / "000.tar", [
        ("s/001.png", png_bytes(1)), ("s/001.json", b"{}"),
        ("s/002.cls", b"3"),                                     # a sample without an image
        ("s/003.jpg", b"not a jpeg"),                            # an image that does not decode
        ("s/004.txt", b"caption"), ("s/004.PNG", png_bytes(4)),  # image after another member
    ])
    write_tar(tmp_path / "001.tar", [("s/005.png", png_bytes(5))])
    shards = list_shards(str(tmp_path), "webdataset", 1000, {})
    assert [s.source for s in shards] == [f"file://{tmp_path}/000.tar", f"file://{tmp_path}/001.tar"]
    decoded = read_and_decode(shards[0], 32, False, False, {})
    # Keys start with the tar's path in the input: equal sample keys in two tars stay two records.
    assert decoded.keys == ["000.tar/s/001", "000.tar/s/004"]
    assert decoded.sources == [f"file://{tmp_path}/000.tar#s/001.png", f"file://{tmp_path}/000.tar#s/004.PNG"]
    rejects = {k: e for k, _, e in decoded.rejects}
    assert rejects["000.tar/s/002"].startswith("sample has no image member")
    assert rejects["000.tar/s/003"] == "cannot decode image: not a readable JPEG, PNG, WEBP, BMP file"
    np.testing.assert_array_equal(decoded.images[1], np.asarray(Image.open(io.BytesIO(png_bytes(4)))))


def test_a_truncated_tar_keeps_what_was_read_and_says_where_it_broke(tmp_path):
    full_path = write_tar(tmp_path / "full.tar", [(f"k{i}.png", png_bytes(i)) for i in range(4)])
    with tarfile.open(full_path) as tar:
        cut = tar.getmember("k2.png").offset_data + 10  # inside the third image
    (tmp_path / "cut.tar").write_bytes(full_path.read_bytes()[:cut])
    full_path.unlink()
    (shard,) = list_shards(str(tmp_path), "webdataset", 1000, {})
    decoded = read_and_decode(shard, 32, False, False, {})
    assert decoded.keys == ["cut.tar/k0", "cut.tar/k1"]
    key, _, error = decoded.rejects[-1]
    assert key == "cut.tar#unreadable" and "tar file unreadable after" in error


@pytest.mark.parametrize("struct", [False, True])
def test_parquet_image_bytes_and_keys(tmp_path, struct):
    write_image_parquet(tmp_path / "part-0.parquet", [("a", png_bytes(1)), ("b", None), (None, png_bytes(2)), ("d", b"junk")], struct)
    (shard,) = list_shards(str(tmp_path), "parquet", 1000, {})
    decoded = read_and_decode(shard, 32, False, False, {}, image_column="image", key_column="key")
    assert decoded.keys == ["a"]
    assert {k: e.split(":")[0] for k, _, e in decoded.rejects} == {
        "b": "image is null", "part-0.parquet:2": "key is null", "d": "cannot decode image"
    }
    by_row = read_and_decode(shard, 32, False, False, {}, image_column="image")
    assert by_row.keys == ["part-0.parquet:0", "part-0.parquet:2"]


def test_format_listing_errors(tmp_path):
    with pytest.raises(InputError, match="no .tar files found"):
        list_shards(str(tmp_path), "webdataset", 10, {})
    with pytest.raises(InputError, match="unknown input format 'tfrecord'"):
        list_shards(str(tmp_path), "tfrecord", 10, {})
