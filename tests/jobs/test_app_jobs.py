"""The restoration, translation and editing jobs end to end on tiny seeded models, a local Ray and the
loopback S3 server: counts, keys, images, manifest values checked against the operators, resume,
schedules, bad specs."""

import io
import json
import re
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image, ImageDraw, ImageFont

from helpers import make_image_folder, png_bytes
from engines import load_inverter
from factories import make_e2style, write_official
from jobs import edit, invert_dataset, restore, translate
from jobs.cli import EXIT_BAD_SPEC, EXIT_OK
from operators.edits import paste_center
from operators.images import images_to_tensor, tensor_to_images
from operators.metrics import psnr, ssim
from pipeline.core.images import LABEL_COLOUR, LABEL_HEIGHT
from pipeline.core.store import latent_codes
from pipeline.restore.tasks import degrade

RESOURCES = {"batch_size": 4}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "inversion": write_official(make_e2style(stages=2, seed=61), root / "inversion.pt"),
        "super_resolution": write_official(make_e2style(stages=2, seed=62), root / "sr.pt", task="celebs_super_resolution"),
        "colorization": write_official(make_e2style(stages=1, seed=63), root / "color.pt", task="ffhq_colorization"),
        "segmentation": write_official(
            make_e2style(stages=1, seed=64, input_channels=19), root / "seg.pt", task="celebs_seg_to_face"
        ),
        "sketch": write_official(make_e2style(stages=1, seed=65, input_channels=1), root / "sketch.pt", task="celebs_sketch_to_face"),
    }


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def read_rows(uri: str, storage_options=None) -> dict:
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    tables = [pq.read_table(fs.open(p, "rb")) for p in sorted(fs.glob(f"{root}/shard-*.parquet"))]
    rows = {name: [v for t in tables for v in t.column(name).to_pylist()] for name in tables[0].column_names if name != "w_plus"}
    rows["w_plus"] = np.concatenate([latent_codes(t) for t in tables])
    return rows


def read_png(uri: str, storage_options=None) -> np.ndarray:
    with fsspec.open(uri, "rb", **(storage_options or {})) as f:
        return np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB"))


def decoded(folder: Path, key: str) -> np.ndarray:
    return np.asarray(Image.open(folder / key).convert("RGB"))


def metric_statistics(values: list[float]) -> dict:
    array = np.array(values)
    return {"count": len(array), "mean": float(np.mean(array)), "std": float(np.std(array)),
            "median": float(np.median(array)), "p5": float(np.percentile(array, 5)), "p95": float(np.percentile(array, 95))}


def test_restore_evaluate_scores_match_the_written_images_and_reruns_do_only_new_shards(ray_local, models, tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    keys = make_image_folder(folder, good=5, bad={"bad/empty.png": b""})
    spec = {
        "input": {"uri": str(folder), "shard_size": 3},
        "model": {"checkpoint": str(models["super_resolution"])},
        "output": {"uri": str(out), "contact_sheet_rows": 4},
        "task": {"name": "super_resolution", "evaluate": True, "factor": 2, "seed": 7},
        "resources": RESOURCES,
        "max_failure_rate": 0.5,
    }
    path = write_spec(tmp_path / "restore.yaml", spec)
    assert restore.main([str(path), "--no-progress"]) == EXIT_OK
    summary = capsys.readouterr().out
    assert "succeeded: 5 of 6 records restored, 1 rejected" in summary
    assert "6 records processed this run" in summary and "\nrejected by reason:\n  1  empty file\n" in summary

    rows = read_rows(str(out))
    # Each metric's statistics, in the summary and the manifest, are numpy's over the rows' column.
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rejected_by_reason"] == {"empty file": 1}
    assert manifest["metrics"] == {name: metric_statistics(rows[name]) for name in ("degraded_psnr", "psnr", "ssim")}
    psnr_line = ", ".join(f"{k} {manifest['metrics']['psnr'][k]:.4g}" for k in ("mean", "std", "median", "p5", "p95"))
    assert f"\npsnr over 5 images: {psnr_line}\n" in summary
    assert rows["key"] == keys and set(rows["task"]) == {"super_resolution"}
    assert json.loads(rows["params"][0]) == {"evaluate": True, "factor": 2, "seed": 7}
    inverter = load_inverter(str(models["super_resolution"]))
    for i, key in enumerate(keys):
        clean = decoded(folder, key)
        low = degrade("super_resolution", clean, key, 7, factor=2)
        codes = inverter.invert(images_to_tensor(low))
        np.testing.assert_allclose(rows["w_plus"][i], codes[0].numpy(), rtol=0, atol=1e-5)
        written = read_png(rows["image"][i])  # PNG is lossless: the scores are of exactly these pixels
        assert rows["image"][i] == f"{out}/_images/{'shard-00000' if i < 3 else 'shard-00001'}/{key[:-4]}.png"
        unit = lambda a: torch.as_tensor(a).permute(2, 0, 1)[None].double() / 255  # noqa: E731
        assert rows["psnr"][i] == pytest.approx(psnr(unit(clean), unit(written)).item(), abs=1e-9)
        assert rows["ssim"][i] == pytest.approx(ssim(unit(clean), unit(written)).item(), abs=1e-9)
        assert rows["degraded_psnr"][i] == pytest.approx(psnr(unit(clean), unit(low)).item(), abs=1e-9)
        restored = tensor_to_images(inverter.synthesize(codes))[0].numpy()
        assert np.abs(written.astype(int) - restored).max() <= 1
    sheet = np.asarray(Image.open(out / "_contact_sheet.png").convert("RGB"))
    # key | clean | degraded | restored, the first 4 records, each row under a strip of titles
    assert sheet.shape == (4 + 4 * (LABEL_HEIGHT + 132), 4 + 132 + 3 * 132, 3)
    row, left = LABEL_HEIGHT + 132, 4 + 132
    for r in range(4):
        top = 4 + r * row
        assert (sheet[top : top + 12, 4 : left - 4] != 255).any()  # the key
        for c in range(3):  # the titles
            assert (sheet[top : top + LABEL_HEIGHT, left + c * 132 : left + c * 132 + 128] != 255).any()
    # The sheet is the shards' previews stacked, cut between rows: 3 records from the first, 1 from the second.
    first, second = (np.asarray(Image.open(out / "_previews" / f"shard-0000{i}.png").convert("RGB")) for i in (0, 1))
    np.testing.assert_array_equal(sheet[: 4 + 3 * row], first[: 4 + 3 * row])
    np.testing.assert_array_equal(sheet[4 + 3 * row :], second[4 : 4 + row])

    stats_before = {p.name: p.read_bytes() for p in (out / "_stats").iterdir()}
    assert restore.main([str(path), "--no-progress"]) == EXIT_OK
    assert "(2 already committed)" in capsys.readouterr().out
    (folder / "c").mkdir()
    (folder / "c" / "new.png").write_bytes(png_bytes(77))
    assert restore.main([str(path), "--no-progress"]) == EXIT_OK
    report = capsys.readouterr().out
    assert "succeeded: 6 of 7 records restored" in report and "3 shards (2 already committed)" in report
    assert "1 record processed this run" in report
    # The totals of the resumed output add up from every shard's stats, the earlier ones' too.
    rows = read_rows(str(out))
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["metrics"] == {name: metric_statistics(rows[name]) for name in ("degraded_psnr", "psnr", "ssim")}
    assert manifest["metrics"]["psnr"]["count"] == 6 and manifest["rejected_by_reason"] == {"empty file": 1}
    assert {p.name: p.read_bytes() for p in (out / "_stats").iterdir() if p.name in stats_before} == stats_before
    assert json.loads((out / "_stats" / "shard-00002.json").read_text())["inputs"] == ["c/new.png"]
    assert restore.main([str(path), "--verify"]) == EXIT_OK

    (out / "_images" / "shard-00000" / "a" / "img_000.png").unlink()
    assert restore.main([str(path), "--verify"]) == 1
    assert "1 image named by rows but not there: '_images/shard-00000/a/img_000.png'" in capsys.readouterr().out


def test_restore_of_users_degraded_images(ray_local, models, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    keys = make_image_folder(folder, good=3)
    spec = write_spec(tmp_path / "s.yaml", {
        "input": {"uri": str(folder)},
        "model": {"checkpoint": str(models["colorization"])},
        "output": {"uri": str(out), "image_format": "jpeg"},
        "task": {"name": "colorization"},
        "resources": RESOURCES,
    })
    assert restore.main([str(spec), "--no-progress"]) == EXIT_OK
    rows = read_rows(str(out))
    assert rows["key"] == keys and "psnr" not in rows
    assert [u.rsplit("/", 1)[1] for u in rows["image"]] == ["img_000.jpg", "img_002.jpg", "img_001.jpg"]
    codes = load_inverter(str(models["colorization"])).invert(images_to_tensor(np.stack([decoded(folder, k) for k in keys])))
    np.testing.assert_allclose(rows["w_plus"], codes.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "model,task,message",
    [
        ("inversion", {"name": "denoise"}, r"model\.checkpoint: .*inversion\.pt was trained for inversion \(its opts\['dataset_type'\] is 'ffhq_encode'\); task denoise needs a 'ffhq_denoise' checkpoint"),
        ("colorization", {"name": "deblur"}, r"task\.name: Input should be 'colorization', 'denoise', 'inpainting' or 'super_resolution'"),
        ("colorization", {"name": "colorization", "factor": 4}, r"task: Value error, factor does not apply to task colorization"),
        ("super_resolution", {"name": "super_resolution", "evaluate": True}, r"super_resolution with evaluate needs a factor"),
        ("super_resolution", {"name": "super_resolution", "evaluate": True, "factor": 3}, r"task\.factor: 3 cannot downsample the model's 32 px images"),
    ],
)
def test_bad_restore_specs_exit_2_with_nothing_written(models, tmp_path, capsys, model, task, message):
    make_image_folder(tmp_path / "in", good=1)
    spec = write_spec(tmp_path / "s.yaml", {
        "input": {"uri": str(tmp_path / "in")},
        "model": {"checkpoint": str(models[model])},
        "output": {"uri": str(tmp_path / "out")},
        "task": task,
    })
    assert restore.main([str(spec)]) == EXIT_BAD_SPEC
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def label_map(seed: int, size: int = 32, top: int = 19) -> bytes:
    labels = np.random.default_rng(seed).integers(0, top, (size // 4, size // 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(labels, np.ones((4, 4), np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def test_translate_label_maps_on_object_storage(ray_local, s3_server, models, tmp_path):
    options = {"endpoint_url": s3_server}
    s3 = fsspec.filesystem("s3", **options)
    for bucket in ("labels", "faces-out"):
        s3.mkdir(bucket)
    s3.pipe({"labels/m/0.png": label_map(0), "labels/m/1.png": label_map(1, size=64), "labels/m/2.png": label_map(2, top=25)})
    s3.put(str(models["segmentation"]), "labels/seg.pt")
    spec = write_spec(tmp_path / "s.yaml", {
        "input": {"uri": "s3://labels/m/", "storage_options": options},
        "model": {"checkpoint": "s3://labels/seg.pt", "storage_options": options},
        "output": {"uri": "s3://faces-out/run/", "storage_options": options},
        "task": {"name": "segmentation_to_face"},
        "resources": RESOURCES,
        "max_failure_rate": 0.5,
    })
    assert translate.main([str(spec), "--no-progress"]) == EXIT_OK
    rows = read_rows("s3://faces-out/run/", options)
    assert rows["key"] == ["0.png", "1.png"]
    assert rows["image"] == ["s3://faces-out/run/_images/shard-00000/0.png", "s3://faces-out/run/_images/shard-00000/1.png"]
    rejects = pq.read_table(s3.open("faces-out/run/_rejects/shard-00000.parquet", "rb")).to_pylist()
    assert [(r["key"], r["error"]) for r in rejects] == [("2.png", "label map holds label 24, outside 0..18")]
    # 1.png is 64 px: resized by nearest neighbour, so its one-hot input is exactly 0.png's kind of map
    inverter = load_inverter(str(models["segmentation"]))
    for i, seed in enumerate((0, 1)):
        labels = np.asarray(Image.open(io.BytesIO(label_map(seed, size=32 * (i + 1)))))[:: i + 1, :: i + 1]
        one_hot = torch.as_tensor((np.arange(19)[:, None, None] == labels[None]).astype(np.float32))[None]
        np.testing.assert_allclose(rows["w_plus"][i], inverter.invert(one_hot)[0].numpy(), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(
            read_png(rows["image"][i], options), tensor_to_images(inverter.synthesize(inverter.invert(one_hot)))[0].numpy()
        )
    assert s3.exists("faces-out/run/_contact_sheet.png") and s3.exists("faces-out/run/_manifest.json")


def test_translate_sketches_refuse_a_three_channel_model(models, tmp_path, capsys):
    make_image_folder(tmp_path / "in", good=1)
    spec = write_spec(tmp_path / "s.yaml", {
        "input": {"uri": str(tmp_path / "in")},
        "model": {"checkpoint": str(models["super_resolution"])},
        "output": {"uri": str(tmp_path / "out")},
        "task": {"name": "sketch_to_face"},
    })
    assert translate.main([str(spec)]) == EXIT_BAD_SPEC
    assert "was trained for super_resolution" in capsys.readouterr().err


@pytest.fixture(scope="module")
def latents(ray_local, models, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """An inversion output of 5 images in 2 shards, to edit from."""
    root = tmp_path_factory.mktemp("latents")
    keys = make_image_folder(root / "in", good=5)
    spec = write_spec(root / "invert.yaml", {
        "input": {"uri": str(root / "in"), "shard_size": 3},
        "model": {"checkpoint": str(models["inversion"]), "stages": 1},
        "output": {"uri": str(root / "out")},
        "resources": RESOURCES,
    })
    assert invert_dataset.main([str(spec), "--no-progress"]) == EXIT_OK
    return root / "in", root / "out", keys


def edit_spec(tmp_path, models, latents_out, edit_section, **input_section) -> Path:
    return write_spec(tmp_path / "edit.yaml", {
        "input": input_section or {"latents": str(latents_out)},
        "model": {"checkpoint": str(models["inversion"]), "stages": 1},
        "output": {"uri": str(tmp_path / "out")},
        "edit": edit_section,
        "resources": RESOURCES,
    })


def test_direction_edits_from_stored_latents(ray_local, models, latents, tmp_path):
    _, stored, keys = latents
    direction = np.random.default_rng(3).normal(size=(10, 32))
    np.save(tmp_path / "smile.npy", direction)
    spec = edit_spec(tmp_path, models, stored, {"kind": "direction", "direction": str(tmp_path / "smile.npy"), "strengths": [0, 2.5]})
    assert edit.main([str(spec), "--no-progress"]) == EXIT_OK
    rows = read_rows(str(tmp_path / "out"))
    original = read_rows(str(stored))["w_plus"]
    assert rows["key"] == [k for k in keys for _ in range(2)]
    assert [json.loads(p)["strength"] for p in rows["params"]] == [0, 2.5] * 5
    np.testing.assert_array_equal(rows["w_plus"][0::2], original)  # strength 0 is the identity
    moved = rows["w_plus"][1::2] - original
    np.testing.assert_allclose(moved[:, :8], np.broadcast_to(2.5 * direction[:8], moved[:, :8].shape), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(moved[:, 8:], 0)  # the official edits leave layers 8 and up alone
    assert rows["image"][1] == f"{tmp_path}/out/_images/shard-00000/a/img_000.s+2.5.png"
    generator = load_inverter(str(models["inversion"]), stages=1)
    np.testing.assert_array_equal(
        read_png(rows["image"][1]), tensor_to_images(generator.synthesize(torch.as_tensor(rows["w_plus"][1:2])))[0].numpy()
    )
    assert edit.main([str(spec), "--verify"]) == EXIT_OK


def test_mixing_and_interpolation_take_exactly_the_named_layers_and_endpoints(ray_local, models, latents, tmp_path):
    _, stored, keys = latents
    original = dict(zip(read_rows(str(stored))["key"], read_rows(str(stored))["w_plus"]))
    (tmp_path / "m").mkdir()
    spec = edit_spec(tmp_path / "m", models, stored, {"kind": "mixing", "styles": [keys[4]], "layers": [7, 8, 9]})
    assert edit.main([str(spec), "--no-progress"]) == EXIT_OK
    rows = read_rows(str(tmp_path / "m" / "out"))
    assert rows["key"] == keys
    for key, codes in zip(rows["key"], rows["w_plus"]):
        np.testing.assert_array_equal(codes[7:], original[keys[4]][7:])
        np.testing.assert_array_equal(codes[:7], original[key][:7])

    (tmp_path / "i").mkdir()
    pairs = [[keys[0], keys[4]], [keys[3], keys[1]]]
    spec = edit_spec(tmp_path / "i", models, stored, {"kind": "interpolation", "pairs": pairs, "steps": 3})
    assert edit.main([str(spec), "--no-progress"]) == EXIT_OK
    rows = read_rows(str(tmp_path / "i" / "out"))
    assert sorted(set(rows["key"])) == sorted([keys[0], keys[3]]) and len(rows["key"]) == 10
    # Image names: each key without its extension, the partner's too (its '/' replaced within the name).
    assert (keys[0], keys[4]) == ("a/img_000.png", "b/img_003.png")
    assert [uri.rsplit("/_images/", 1)[1] for uri, k in zip(rows["image"], rows["key"]) if k == keys[0]] == [
        f"shard-00000/a/img_000.to-b_img_003-{k}.png" for k in range(5)
    ]
    for start, end in pairs:
        path = rows["w_plus"][[i for i, k in enumerate(rows["key"]) if k == start]]
        np.testing.assert_array_equal(path[0], original[start])
        np.testing.assert_array_equal(path[-1], original[end])
        np.testing.assert_allclose(path[2], original[start] + 0.5 * (original[end] - original[start]), atol=1e-6)
    assert edit.main([str(spec), "--verify"]) == EXIT_OK


def test_face_swap_inverts_the_pasted_image(ray_local, models, latents, tmp_path):
    folder, _, keys = latents
    spec = edit_spec(
        tmp_path, models, None, {"kind": "face_swap", "pairs": [[keys[1], keys[3]], [keys[4], keys[3]]]},
        uri=str(folder), shard_size=2,
    )
    assert edit.main([str(spec), "--no-progress"]) == EXIT_OK
    rows = read_rows(str(tmp_path / "out"))
    assert rows["key"] == [keys[3], keys[3]]
    assert [json.loads(p)["source"] for p in rows["params"]] == [keys[1], keys[4]]
    # The preview names its columns: what was pasted where, then the swapped face under its variant.
    preview = np.asarray(Image.open(tmp_path / "out" / "_previews" / "shard-00001.png").convert("RGB"))
    titles = Image.new("RGB", (preview.shape[1], LABEL_HEIGHT), "white")
    draw, font = ImageDraw.Draw(titles), ImageFont.load_default_imagefont()
    for column, title in enumerate(["target", "source", "pasted", f"from-{keys[1]}", f"from-{keys[4]}"]):
        left = 4 + 128 + 4 + column * 132
        draw.text((left + (128 - font.getlength(title)) // 2, 1), title, fill=LABEL_COLOUR, font=font)
    np.testing.assert_array_equal(preview[4 : 4 + LABEL_HEIGHT, 4 + 128 :], np.asarray(titles)[:, 4 + 128 :])
    inverter = load_inverter(str(models["inversion"]), stages=1)
    for row, source in enumerate((keys[1], keys[4])):
        pasted = paste_center(images_to_tensor(decoded(folder, source)), images_to_tensor(decoded(folder, keys[3])))
        np.testing.assert_allclose(rows["w_plus"][row], inverter.invert(pasted)[0].numpy(), rtol=0, atol=1e-5)
    assert edit.main([str(spec), "--verify"]) == EXIT_OK


def test_edits_on_the_fly_match_stored_latents(ray_local, models, latents, tmp_path):
    folder, stored, keys = latents
    np.save(tmp_path / "d.npy", np.ones((1, 32)))
    spec = edit_spec(tmp_path, models, None, {"kind": "direction", "direction": str(tmp_path / "d.npy"), "strengths": [0]}, uri=str(folder))
    assert edit.main([str(spec), "--no-progress"]) == EXIT_OK
    np.testing.assert_allclose(read_rows(str(tmp_path / "out"))["w_plus"], read_rows(str(stored))["w_plus"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "section,message",
    [
        ({"kind": "direction", "direction": "BAD"}, r"edit\.direction: direction file .*bad\.npy has shape \[3, 32\]; this generator needs \[32\] or \[10, 32\]"),
        ({"kind": "direction", "direction": "/nowhere/d.npy"}, r"edit\.direction: direction file /nowhere/d\.npy does not exist"),
        ({"kind": "direction", "direction": "BAD", "layers": [12]}, r"edit\.direction|edit\.layers"),
        ({"kind": "mixing", "styles": ["a/img_000.png"]}, r"edit\.layers: none given, and the default \(10 to the last\) is empty for 10 W\+ layers"),
        ({"kind": "interpolation", "pairs": [["a/img_000.png", "z/missing.png"]]}, r"edit\.pairs\[0\]\[1\]: key 'z/missing\.png' is not in the input"),
        ({"kind": "warp"}, r"edit\.kind: Input should be 'direction', 'mixing', 'interpolation' or 'face_swap'"),
        ({"kind": "mixing", "styles": ["a/img_000.png"], "steps": 3}, r"edit: Value error, steps does not apply to kind mixing"),
        ({"kind": "face_swap", "pairs": [["a/img_000.png", "b/img_001.png"]]}, r"face_swap pastes image parts, so it needs input\.uri"),
    ],
)
def test_bad_edit_specs_exit_2_with_nothing_written(models, latents, tmp_path, capsys, section, message):
    np.save(tmp_path / "bad.npy", np.zeros((3, 32)))
    if section.get("direction") == "BAD":
        section = {**section, "direction": str(tmp_path / "bad.npy")}
    spec = edit_spec(tmp_path, models, latents[1], section)
    assert edit.main([str(spec)]) == EXIT_BAD_SPEC
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_edit_from_latents_on_object_storage_then_a_new_shard(ray_local, s3_server, models, tmp_path, capsys):
    options = {"endpoint_url": s3_server}
    s3 = fsspec.filesystem("s3", **options)
    s3.mkdir("edits")
    folder = tmp_path / "in"
    keys = make_image_folder(folder, good=4)
    s3.put(str(folder) + "/", "edits/faces/", recursive=True)
    s3.put(str(models["inversion"]), "edits/inversion.pt")
    model = {"checkpoint": "s3://edits/inversion.pt", "stages": 1, "storage_options": options}
    invert_spec = write_spec(tmp_path / "invert.yaml", {
        "input": {"uri": "s3://edits/faces/", "shard_size": 2, "storage_options": options},
        "model": model,
        "output": {"uri": "s3://edits/latents/", "storage_options": options},
        "resources": RESOURCES,
    })
    edit_spec_path = write_spec(tmp_path / "edit.yaml", {
        "input": {"latents": "s3://edits/latents/", "latents_storage_options": options},
        "model": model,
        "output": {"uri": "s3://edits/interpolated/", "storage_options": options},
        "edit": {"kind": "interpolation", "pairs": [[keys[0], keys[3]], [keys[2], keys[1]]], "steps": 1},
        "resources": RESOURCES,
    })
    assert invert_dataset.main([str(invert_spec), "--no-progress"]) == EXIT_OK
    assert edit.main([str(edit_spec_path), "--no-progress"]) == EXIT_OK
    rows = read_rows("s3://edits/interpolated/", options)
    assert rows["key"] == [keys[0]] * 3 + [keys[2]] * 3
    assert rows["source"][0] == f"s3://edits/faces/{keys[0]}"
    assert all(s3.exists(u) for u in rows["image"])
    capsys.readouterr()

    # A new image arrives: the inversion's only work is its shard, and so is the edit's.
    s3.pipe("edits/faces/c/new.png", png_bytes(90))
    assert invert_dataset.main([str(invert_spec), "--no-progress"]) == EXIT_OK
    assert "3 shards (2 already committed)" in capsys.readouterr().out
    assert edit.main([str(edit_spec_path), "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "succeeded: 2 of 2 records edited" in out and "3 shards (2 already committed)" in out
    assert edit.main([str(edit_spec_path), "--verify"]) == EXIT_OK
