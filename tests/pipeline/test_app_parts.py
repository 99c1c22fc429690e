"""Parts of the application jobs that need no Ray: direction files, output names, evaluation inputs."""

import hashlib

import numpy as np
import pytest
import torch

from engines.directions import DirectionError, load_direction
from pipeline.core.images import image_name, output_names, safe_name
from pipeline.restore.steps import PrepareRestore
from pipeline.core.shards import Record, Shard
from pipeline.restore.tasks import degrade
from helpers import make_image_folder


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
    # The keys a variant names lose their extensions too, as the record's own key does.
    assert image_name("a/b.png", "mix-c/d.png", "png") == "a/b.mix-c_d.png"
    assert image_name("face_00.png", "to-face_05.png-0", "png") == "face_00.to-face_05-0.png"
    assert image_name("face_04.JPEG", "from-face_00.webp", "jpeg") == "face_04.from-face_00.jpg"
    assert image_name("face.jpg", "s+1", "png", keep_extension=True, tag="0a1b2c3d") == "face-jpg.s+1-0a1b2c3d.png"


def test_output_names_of_keys_that_differ_only_in_extension_or_replaced_characters_stay_unique():
    keys = ["face.jpg", "face.png", "a b.png", "a_b.png", "x/y.webp"]
    rows = [(r, variant, {}) for r in range(len(keys)) for variant in ("s-1", "s+1")]
    names, problems = output_names(rows, keys, "png", set(), 40)
    tag = lambda key, variant: hashlib.sha256(f"{key}\n{variant}".encode()).hexdigest()[:8]  # noqa: E731
    assert problems == {}
    assert names == [
        "face-jpg.s-1.png", "face-jpg.s+1.png", "face-png.s-1.png", "face-png.s+1.png",  # extensions kept apart
        "a_b.s-1.png", "a_b.s+1.png", f"a_b.s-1-{tag('a_b.png', 's-1')}.png", f"a_b.s+1-{tag('a_b.png', 's+1')}.png",
        "x/y.s-1.png", "x/y.s+1.png",
    ]
    assert len(set(names)) == len(names)
    # Two partners of one record that differ only in extension (an interpolation towards both).
    rows = [(0, "to-face_05.png-0", {}), (0, "to-face_05.jpg-0", {})]
    names, problems = output_names(rows, ["face_00.png"], "png", set(), 40)
    assert names == ["face_00.to-face_05-0.png", f"face_00.to-face_05-0-{tag('face_00.png', 'to-face_05.jpg-0')}.png"]
    # A retry: the name the shard's earlier images hold is taken, so the recovered record's gets the hash.
    names, problems = output_names([(0, "", {})], ["face.jpg"], "png", {"face.png"}, 40)
    assert names == [f"face-{tag('face.jpg', '')}.png"] and problems == {}
    # The same key and variant a third time cannot be told apart, even by the hash: the record is refused.
    names, problems = output_names([(0, "s+1", {})] * 3, ["k.png"], "png", set(), 40)
    assert names == [None] * 3 and problems == {0: "output name " + repr(f"k.s+1-{tag('k.png', 's+1')}.png")
                                                + " is taken by another row of the same key and variant"}


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
