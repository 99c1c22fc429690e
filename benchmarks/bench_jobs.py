"""Images/s of every job (inversion, restoration, translation, editing) through the runner, same images, one run.

    python benchmarks/bench_jobs.py [--preset e2style-ffhq-1024] [--images 32] [--batch 4] [--shard-size 8]
                                    [--work outputs/bench]

Each job runs end to end through ``plan_job`` and ``run_plan`` on one local Ray (loopback), with one
inference actor on CPU (all CPUs but half of one, as many torch threads), decode tasks with half a CPU
and writers committing Parquet plus, for the application jobs, PNG images and a contact sheet. The
jobs, in this order, on the same seeded PNGs of the model's image size:

- invert_dataset: W+ codes only (1 stage: the encoder alone) -- the baseline;
- restore super_resolution with ``evaluate: true``, factor 4: degrade, invert, render, PSNR/SSIM;
- restore colorization with ``evaluate: false``: invert and render;
- translate sketch_to_face (a 1-channel checkpoint): the PNGs read as sketches, invert and render;
- edit direction from stored latents (``input.latents``: the invert_dataset output of this run): only the
  generator runs, once per strength;
- edit direction on the fly (``input.uri``: the images): invert, then the generator once per strength.

The edits use strengths [-1, 1] and a seeded random [num_ws, style_dim] direction, so each record makes
two images. Checkpoints are seeded random weights of ``--preset`` in the official file format (written
once under ``--work``; the official dataset_type of each task), all with 1 stage. The specs are
identical apart from what each job needs (its checkpoint, its task or edit section, its input source).
"end to end" counts from ``run_plan`` to its return (actor start and model load included, the driver's
preflight ``plan_job`` excluded); "steady" counts the output of the shards after the first over the time
from the first commit to the last. Each job's actor is killed when it returns and the driver holds no
model between jobs.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers, imported as the tests import them

from helpers import png_bytes  # noqa: E402
from factories import make_e2style, write_official  # noqa: E402
from operators.presets import get_preset  # noqa: E402
from pipeline.edit.spec import EditSpec  # noqa: E402
from pipeline.restore.spec import RestoreSpec  # noqa: E402
from pipeline.translate.spec import TranslateSpec  # noqa: E402
from pipeline.edit.job import EDIT  # noqa: E402
from pipeline.restore.job import RESTORE  # noqa: E402
from pipeline.translate.job import TRANSLATE  # noqa: E402
from pipeline.core.cluster import start_ray  # noqa: E402
from pipeline.core.preflight import plan_job  # noqa: E402
from pipeline.core.schedule import run_plan  # noqa: E402
from pipeline.inversion.job import INVERSION  # noqa: E402
from pipeline.inversion.spec import InversionSpec  # noqa: E402

# checkpoint name -> (official dataset_type, input channels)
CHECKPOINTS = {
    "encode": ("ffhq_encode", 3),
    "colorization": ("ffhq_colorization", 3),
    "super_resolution": ("celebs_super_resolution", 3),
    "sketch_to_face": ("celebs_sketch_to_face", 1),
}
STRENGTHS = [-1.0, 1.0]


def make_inputs(work: Path, preset: str, count: int) -> tuple[dict[str, Path], Path, Path]:
    """The checkpoints (1 stage, seeded), ``count`` seeded PNGs of the model's size, and the direction."""
    cfg = get_preset(preset)
    checkpoints = {name: work / f"{preset}-{name}-stage1.pt" for name in CHECKPOINTS}
    for channels in (3, 1):
        missing = [n for n, (_, c) in CHECKPOINTS.items() if c == channels and not checkpoints[n].exists()]
        if missing:
            model = make_e2style(preset, stages=1, input_channels=channels, seed=0)
            for name in missing:
                write_official(model, checkpoints[name], task=CHECKPOINTS[name][0])
            del model
            gc.collect()
    folder = work / f"images-{cfg.image_size}px-{count}"
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(count):
            (tmp / f"img_{i:05d}.png").write_bytes(png_bytes(i, cfg.image_size))
        tmp.rename(folder)
    direction = work / f"direction-{preset}.npy"
    if not direction.exists():
        num_ws, dim = cfg.generator.num_ws, cfg.generator.style_dim
        np.save(direction, np.random.default_rng(0).standard_normal((num_ws, dim)).astype(np.float32))
    return checkpoints, folder, direction


def jobs(args, checkpoints: dict[str, Path], folder: Path, direction: Path, out: Path) -> list[tuple]:
    """(label, model work per record, spec class, job kind, output folder, sections, images per record)."""
    images = {"uri": str(folder), "shard_size": args.shard_size}
    edit = {"kind": "direction", "direction": str(direction), "strengths": STRENGTHS}
    n = len(STRENGTHS)
    return [
        ("invert_dataset", "encoder", InversionSpec, INVERSION, out / "invert",
         {"input": images, "model": "encode"}, 1),
        ("restore super_resolution, evaluate, factor 4", "encoder + generator + PSNR/SSIM", RestoreSpec, RESTORE,
         out / "restore-sr", {"input": images, "model": "super_resolution",
                              "task": {"name": "super_resolution", "evaluate": True, "factor": 4}}, 1),
        ("restore colorization", "encoder + generator", RestoreSpec, RESTORE, out / "restore-colorization",
         {"input": images, "model": "colorization", "task": {"name": "colorization", "evaluate": False}}, 1),
        ("translate sketch_to_face", "encoder (1 channel) + generator", TranslateSpec, TRANSLATE,
         out / "translate-sketch", {"input": images, "model": "sketch_to_face", "task": {"name": "sketch_to_face"}}, 1),
        ("edit direction from latents", f"generator x {n}", EditSpec, EDIT, out / "edit-latents",
         {"input": {"latents": str(out / "invert")}, "model": "encode", "edit": edit}, n),
        ("edit direction on the fly", f"encoder + generator x {n}", EditSpec, EDIT, out / "edit-images",
         {"input": images, "model": "encode", "edit": edit}, n),
    ]


def run_one(spec_cls, kind, output: Path, sections: dict, checkpoints: dict[str, Path], args) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    cpus = os.cpu_count() or 1
    body = dict(sections)
    body["model"] = {"checkpoint": str(checkpoints[sections["model"]]), "stages": 1}
    body["output"] = {"uri": str(output)}
    body["resources"] = {
        "num_actors": 1, "num_cpus_per_actor": cpus - 0.5, "batch_size": args.batch, "decode_cpus": 0.5,
    }
    spec = spec_cls.model_validate(body)
    plan = plan_job(spec, kind)
    commits: list[tuple[float, int, int]] = []

    def progress(stats) -> None:
        commits.append((time.perf_counter(), stats.records, stats.written))

    start = time.perf_counter()
    report = run_plan(plan, progress=progress)
    seconds = time.perf_counter() - start
    files = sorted(p for p in (output / "_images").rglob("*") if p.is_file()) if (output / "_images").exists() else []
    steady = None
    if len(commits) > 1:
        steady = (commits[0][0], commits[-1][0], sum(w for _, _, w in commits[1:]))
    return {"report": report, "seconds": seconds, "image_files": len(files), "steady": steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="e2style-ffhq-1024", help='model architecture ("tiny-64" for a quick check)')
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--shard-size", type=int, default=None, help="images per shard; default 2 x batch")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench")
    args = parser.parse_args()
    args.shard_size = args.shard_size or 2 * args.batch
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    checkpoints, folder, direction = make_inputs(args.work, args.preset, args.images)
    out = args.work / f"jobs-{args.preset}"
    cfg = get_preset(args.preset)
    start_ray(None)
    print(
        f"# {os.cpu_count()} CPUs, torch {torch.__version__}, preset {args.preset} ({cfg.image_size} px input, "
        f"{cfg.generator.resolution} px generator), 1 stage, {args.images} images, batch {args.batch}, "
        f"shards of {args.shard_size}, strengths {STRENGTHS}",
        flush=True,
    )
    print("| job | model work per record | records | output images | end to end s | records/s | images/s | steady images/s |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    rates: dict[str, float] = {}
    for label, work, spec_cls, kind_factory, output, sections, per_record in jobs(args, checkpoints, folder, direction, out):
        try:
            result = run_one(spec_cls, kind_factory(), output, sections, checkpoints, args)
        except Exception as e:
            traceback.print_exc()
            print(f"| {label} | {work} | FAILED: {type(e).__name__}: {e} | | | | | |", flush=True)
            continue
        finally:
            gc.collect()
        report, seconds = result["report"], result["seconds"]
        made = report.written * per_record
        if spec_cls is not InversionSpec and result["image_files"] != made:
            print(f"# {label}: {result['image_files']} image files written, expected {made}", flush=True)
        if not report.succeeded or report.written != args.images:
            print(f"# {label}: {report.summary()}", flush=True)
        steady = "-"
        if result["steady"]:
            first, last, written = result["steady"]
            steady = f"{written * per_record / (last - first):.3f}"
        rates[label] = made / seconds
        print(
            f"| {label} | {work} | {report.written} | {made} | {seconds:.1f} | {report.written / seconds:.3f} | "
            f"{made / seconds:.3f} | {steady} |",
            flush=True,
        )
    stored, fly = rates.get("edit direction from latents"), rates.get("edit direction on the fly")
    if stored and fly:
        print(f"# edit from latents / edit on the fly (output images/s, end to end): {stored / fly:.2f}x")
    print(f"# whole run (inputs, preflight, jobs): {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
