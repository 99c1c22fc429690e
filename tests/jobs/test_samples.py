"""The bundled samples: `python -m jobs.make_sample` writes a model per task and a spec per job, and each
spec runs as written, its committed output holding what the sample models compute from the bundled
inputs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from engines import load_inverter
from engines.checkpoints import read_checkpoint
from jobs import edit, evaluate, invert_dataset, make_sample, restore, translate
from jobs.cli import EXIT_OK
from operators.edits import paste_center
from operators.images import images_to_tensor
from pipeline.core.decode import decode_image
from pipeline.core.store import latent_codes
from pipeline.core.job import TASK_DATASET_TYPES
from pipeline.restore.tasks import TASKS, degrade
from pipeline.translate.steps import TRANSLATIONS, segmentation_input, sketch_input

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
FACES = [f"face_{i:02d}.png" for i in range(6)]
SIZE = 32  # the tiny sample models' input size
RUN = {
    "invert": invert_dataset.main, "restore": restore.main, "translate": translate.main, "edit": edit.main,
    "evaluate": evaluate.main,
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The folder that make_sample wrote the models and specs into."""
    into = tmp_path_factory.mktemp("sample")
    assert make_sample.main(["--into", str(into), "--specs", str(into / "specs")]) == EXIT_OK
    return into


@pytest.fixture(scope="module")
def ran(sample, ray_local):
    """Every spec make_sample wrote, run as written (inversion first: the edits read its codes)."""
    specs = sorted((sample / "specs").glob("*.yaml"), key=lambda p: (p.stem != "invert", p.stem))
    for spec in specs:
        assert RUN[spec.stem.split("-")[0]]([str(spec), "--no-progress"]) == EXIT_OK, spec.name
    return [p.stem for p in specs]


def read_rows(folder: Path) -> dict:
    tables = [pq.read_table(p) for p in sorted(folder.glob("shard-*.parquet"))]
    rows = {name: [v for t in tables for v in t.column(name).to_pylist()] for name in tables[0].column_names if name != "w_plus"}
    rows["w_plus"] = np.concatenate([latent_codes(t) for t in tables])
    return rows


def face(key: str) -> np.ndarray:
    return decode_image((SAMPLES / "faces" / key).read_bytes(), SIZE, True, False).copy()  # writable, for torch


def inverter(sample: Path, task: str | None = None):
    name = "e2style-tiny-64-stage2.pt" if task is None else f"e2style-tiny-64-{task}.pt"
    return load_inverter(str(sample / "model" / name))


def test_a_model_for_every_task_and_a_spec_for_every_task_and_edit(sample):
    names = sorted(p.stem for p in (sample / "specs").glob("*.yaml"))
    assert names == sorted(
        ["invert", *(f"restore-{t}" for t in TASKS), *(f"translate-{t}" for t in TRANSLATIONS),
         *(f"edit-{k}" for k in ("direction", "mixing", "interpolation", "face_swap")), "evaluate"]
    )
    for task in (*TASKS, *TRANSLATIONS):
        opts = read_checkpoint(str(sample / "model" / f"e2style-tiny-64-{task}.pt"))["opts"]
        assert opts["dataset_type"] == TASK_DATASET_TYPES[task] and opts["training_stage"] == 1
        assert opts["input_nc"] == (TRANSLATIONS[task].channels if task in TRANSLATIONS else 3)
    spec = yaml.safe_load((sample / "specs" / "restore-denoise.yaml").read_text())
    assert spec["model"]["checkpoint"] == str(sample / "model" / "e2style-tiny-64-denoise.pt")
    assert spec["input"]["uri"] == f"{SAMPLES / 'faces'}/" and spec["output"]["uri"] == f"{sample / 'restore-denoise'}/"
    assert "untrained" in (sample / "specs" / "invert.yaml").read_text()


def test_running_it_again_keeps_the_models_and_rewrites_the_specs(sample, tmp_path, capsys):
    into = tmp_path / "again"
    shutil.copytree(sample / "model", into / "model")
    before = {p.name: p.stat().st_mtime_ns for p in (into / "model").iterdir()}
    assert make_sample.main(["--into", str(into), "--specs", str(into / "specs")]) == EXIT_OK
    assert "(there already)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (into / "model").iterdir()} == before
    assert yaml.safe_load((into / "specs" / "invert.yaml").read_text())["output"]["uri"] == f"{into / 'invert'}/"


def test_the_inversion_sample(sample, ran):
    rows = read_rows(sample / "invert")
    assert rows["key"] == FACES and rows["source"][0] == f"file://{SAMPLES / 'faces' / FACES[0]}"
    codes = inverter(sample).invert(images_to_tensor(np.stack([face(k) for k in FACES])))
    np.testing.assert_allclose(rows["w_plus"], codes.numpy(), rtol=0, atol=1e-5)
    assert len(list((sample / "invert").glob("shard-*.parquet"))) == 2  # shard_size 4: six faces, two shards


@pytest.mark.parametrize("task", list(TASKS))
def test_each_restoration_sample_restores_the_degraded_faces(sample, ran, task):
    rows = read_rows(sample / f"restore-{task}")
    assert rows["key"] == FACES and set(rows["task"]) == {task}
    params = json.loads(rows["params"][0])
    assert params["evaluate"] is True and np.isfinite(rows["psnr"]).all() and np.isfinite(rows["ssim"]).all()
    seed = params.get("seed", 0)
    degradation = {k: v for k, v in params.items() if k not in ("evaluate", "seed")}
    degraded = np.stack([degrade(task, face(k), k, seed, **degradation) for k in FACES])
    codes = inverter(sample, task).invert(images_to_tensor(degraded))
    np.testing.assert_allclose(rows["w_plus"], codes.numpy(), rtol=0, atol=1e-5)
    assert all(Image.open(uri).size == (SIZE, SIZE) for uri in rows["image"])
    assert (sample / f"restore-{task}" / "_contact_sheet.png").exists()


@pytest.mark.parametrize("task,folder,read", [
    ("sketch_to_face", "sketches", sketch_input), ("segmentation_to_face", "labels", segmentation_input),
])
def test_each_translation_sample_translates_the_bundled_drawings(sample, ran, task, folder, read):
    rows = read_rows(sample / f"translate-{task}")
    assert rows["key"] == FACES and set(rows["task"]) == {task}
    inputs = np.stack([read((SAMPLES / folder / k).read_bytes(), SIZE) for k in FACES])
    codes = inverter(sample, task).invert(torch.as_tensor(inputs))
    np.testing.assert_allclose(rows["w_plus"], codes.numpy(), rtol=0, atol=1e-5)
    assert all(Path(uri).exists() for uri in rows["image"])


def test_the_edit_samples(sample, ran):
    codes = dict(zip(FACES, read_rows(sample / "invert")["w_plus"]))
    direction = np.load(sample / "model" / "direction.npy")

    rows = read_rows(sample / "edit-direction")
    assert rows["key"] == [k for k in FACES for _ in range(3)]
    assert [json.loads(p)["strength"] for p in rows["params"]] == [-6, 0, 6] * 6
    for key, strength, moved in zip(rows["key"], [-6, 0, 6] * 6, rows["w_plus"]):
        np.testing.assert_allclose(moved[:8], codes[key][:8] + strength * direction, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(moved[8:], codes[key][8:])

    rows = read_rows(sample / "edit-mixing")
    assert rows["key"] == FACES
    for key, mixed in zip(rows["key"], rows["w_plus"]):
        np.testing.assert_array_equal(mixed[:5], codes[key][:5])
        np.testing.assert_array_equal(mixed[5:], codes["face_05.png"][5:])

    rows = read_rows(sample / "edit-interpolation")
    assert rows["key"] == ["face_00.png"] * 5 + ["face_02.png"] * 5  # 3 steps between the ends, both ends kept
    for start, end, path in (("face_00.png", "face_01.png", rows["w_plus"][:5]), ("face_02.png", "face_03.png", rows["w_plus"][5:])):
        np.testing.assert_array_equal(path[0], codes[start])
        np.testing.assert_array_equal(path[-1], codes[end])
        np.testing.assert_allclose(path[2], (codes[start] + codes[end]) / 2, rtol=0, atol=1e-6)

    rows = read_rows(sample / "edit-face_swap")
    assert rows["key"] == ["face_00.png"] and json.loads(rows["params"][0])["source"] == "face_04.png"
    pasted = paste_center(images_to_tensor(face("face_04.png")), images_to_tensor(face("face_00.png")))
    np.testing.assert_allclose(rows["w_plus"][0], inverter(sample).invert(pasted)[0].numpy(), rtol=0, atol=1e-5)
    for name in ("edit-direction", "edit-mixing", "edit-interpolation", "edit-face_swap"):
        assert (sample / name / "_manifest.json").exists()


def test_the_evaluation_sample(sample, ran):
    rows = read_rows(sample / "evaluate")
    mine = np.array(rows["engine"]) == "torch float32"  # each shard's rows: the job's engine's, then bfloat16's
    assert [k for k, m in zip(rows["key"], mine) if m] == FACES and sorted(set(rows["engine"])) == ["torch bfloat16", "torch float32"]
    codes = inverter(sample).invert(images_to_tensor(np.stack([face(k) for k in FACES])))
    np.testing.assert_allclose(rows["w_plus"][mine], codes.numpy(), rtol=0, atol=1e-5)
    report = json.loads((sample / "evaluate" / "_report.json").read_text())
    assert (report["images"], report["engines"]) == (6, ["torch float32", "torch bfloat16"])
    mean = report["results"]["torch float32"]["stages"]["stage2"]["psnr"]["mean"]
    assert mean == pytest.approx(np.mean(np.array(rows["psnr_stage2"])[mine]), rel=1e-12)
    assert all(weights["weights"].rsplit("/", 1)[1].startswith("untrained-") for weights in report["metric_networks"].values())
    for name in ("_report.md", "_report.png", "_best_worst.png"):
        assert (sample / "evaluate" / name).exists()
