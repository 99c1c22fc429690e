"""Parts of the application jobs that need no Ray: direction files, output names, evaluation inputs."""

import numpy as np
import pytest
import torch

from engines.directions import DirectionError, load_direction
from pipeline.core.images import image_name, safe_name
from pipeline.restore.steps import PrepareRestore
from pipeline.core.shards import Record, Shard
from pipeline.restore.tasks import degrade
from datasets import make_image_folder


def test_direction_files_in_every_accepted_form(tmp_path):
    rows = np.random.default_rng(0).normal(size=(10, 32))
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "one.npy", rows[:1])
    torch.save({"smile": torch.tensor(rows[0])}, tmp_path / "dict.pt")
    np.testing.assert_array_equal(load_direction(str(tmp_path / "rows.npy"), 10, 32), rows.astype(np.float32))
    np.testing.assert_array_equal(load_direction(str(tmp_path / "one.npy"), 10, 32), rows[0].astype(np.float32))
    np.testing.assert_array_equal(load_direction(str(tmp_path / "dict.pt"), 10, 32), rows[0].astype(np.float32))


def test_unusable_direction_files_are_refused_by_name(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "nan.npy", np.full(32, np.nan))
    torch.save({"a": torch.zeros(32), "b": torch.zeros(32)}, tmp_path / "two.pt")
    (tmp_path / "d.txt").write_text("1 2 3")
    for name, message in [
        ("objects.npy", r"objects\.npy cannot be read: ValueError"),
        ("nan.npy", r"nan\.npy must hold finite floating-point values"),
        ("two.pt", r"two\.pt holds a dict with 2 tensors; expected one"),
        ("d.txt", r"d\.txt: expected a \.npy or \.pt file"),
    ]:
        with pytest.raises(DirectionError, match=message):
            load_direction(str(tmp_path / name), 10, 32)


def test_output_names_stay_inside_their_folder():
    assert safe_name("../x/./a b?.png") == "x/a_b_.png"
    assert safe_name("..") == "_"
    assert image_name("a/img_000.PNG", "", "jpeg") == "a/img_000.jpg"
    assert image_name("tar/sample7", "s-2.5", "webp") == "tar/sample7.s-2.5.webp"
    assert image_name("a/b.png", "mix-c/d.png", "png") == "a/b.mix-c_d.png.png"


def test_evaluation_inputs_are_degraded_per_key(tmp_path):
    keys = make_image_folder(tmp_path, good=3)
    shard = Shard(0, "images", tuple(Record(k, str(tmp_path / k)) for k in keys))
    args = {"resize": False, "convert_to_rgb": False, "storage_options": {}, "image_column": "image", "key_column": None}
    prepare = PrepareRestore(32, args, "denoise", True, 5, {"noise": "salt_and_pepper", "amount": 0.2}, 2)
    meta, payload = prepare(shard, None)
    assert meta.keys == keys and len(meta.previews) == 2
    for key, clean, noisy in zip(keys, payload["clean"], payload["inputs"]):
        np.testing.assert_array_equal(noisy, degrade("denoise", clean, key, 5, noise="salt_and_pepper", amount=0.2))
        changed = (noisy != clean).mean()
        assert 0.17 < changed < 0.23  # about ``amount`` of the values are set to 0 or 255
    # a retry of one record degrades it exactly as the first run did
    meta_retry, payload_retry = prepare(shard, frozenset([keys[1]]))
    np.testing.assert_array_equal(payload_retry["inputs"][0], payload["inputs"][1])
