"""Records/s of the inversion pipeline against a bare load_inverter loop, same model, machine and images.

    python benchmarks/bench_pipeline.py [--images 128] [--stages 1] [--batch 8] [--work outputs/bench]
                                        [--gpu] [--precision bfloat16] [--ceiling-images 1024]
                                        [--ceiling-shard 64]

The model is the official-size E2Style (IR-SE50 encoder at 256 px, 1024 generator) with random weights,
written once in the official file format under ``--work``. The images are seeded 256x256 PNGs. Both
sides read the same files, decode them, convert them and invert them at the same batch size:

- engine alone: the engine's invert on a batch already on its device;
- bare loop: one process, the same engine (``build_engine`` with the job's options, built before
  timing) then read + decode + invert, batch after batch;
- pipeline: ``run_plan`` on a local Ray (decode tasks with half a CPU reserved, one inference actor with
  the rest and as many torch threads as the bare loop, a writer committing Parquet). "end to end"
  counts from the call to the last commit, including the actor's start and model load; "steady state"
  counts the records committed after the shards that were read while the engine was built (the shards
  in flight: they wait ready, so they commit faster than the pipeline can deliver) over the time from
  the commit before them to the last;
  "first commit" is the report's time from the start of the run to its first committed shard;
- the pipeline's own ceiling: the same run with the model step replaced by one that returns zero codes
  without running the model (a benchmark-only stand-in, never a job), on the reference engine form so
  that no gate runs first: what decode, transfer and write move on this machine's cores. On CPU its actor,
  which runs no model, keeps half a CPU and the decode tasks share the rest (two at a time on two cores);
  with ``--gpu`` the resources are those of the real run; shards of ``--ceiling-shard`` images (the jobs'
  default is 1000: smaller shards show the cost per shard). It is held to plain loops over the same files:
  one thread, and as many threads as the machine has cores (Pillow decodes outside the GIL).

The bare loop's model load is outside its timed part. It runs before and after the pipeline and the
mean of the two is the reference, so drift on a shared machine does not favour either side.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines import official_checkpoint, write_checkpoint  # noqa: E402
from engines.batching import seconds_per_call  # noqa: E402
from engines.engine import build_engine  # noqa: E402
from engines.gate import gate_batch  # noqa: E402
from operators.e2style import E2Style  # noqa: E402
from operators.presets import get_preset  # noqa: E402
from pipeline.core.decode import decode_image  # noqa: E402
from pipeline.core.cluster import start_ray  # noqa: E402
from pipeline.core.model_steps import invert_images  # noqa: E402
from pipeline.core.preflight import engine_options, plan_job  # noqa: E402
from pipeline.core.schedule import run_plan, shards_in_flight  # noqa: E402
from pipeline.core.job import Work  # noqa: E402
from pipeline.inversion.job import INVERSION, InversionJob  # noqa: E402
from pipeline.inversion.spec import InversionSpec  # noqa: E402


def make_inputs(work: Path, count: int, stages: int) -> tuple[Path, Path]:
    checkpoint = work / f"e2style-official-size-stage{stages}.pt"
    if not checkpoint.exists():
        torch.manual_seed(0)
        model = E2Style(dataclasses.replace(get_preset("e2style-ffhq-1024"), stages=stages))
        write_checkpoint(official_checkpoint(model), str(checkpoint))
    folder = work / f"images-{count}"
    if not folder.exists():
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(count):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, format="PNG")
            (folder / f"img_{i:05d}.png").write_bytes(buf.getvalue())
    return checkpoint, folder


def decode_loop(folder: Path, threads: int = 1) -> float:
    """records/s of reading and decoding the images in one process on ``threads`` threads, no model: what
    the ceiling is held to."""
    files = sorted(folder.glob("*.png"))
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda f: decode_image(f.read_bytes(), 256, False, False), files):
            pass
    return len(files) / (time.perf_counter() - start)


def engine_alone(engine, batch: int) -> float:
    cfg = engine.config
    x = gate_batch(batch, cfg.input_channels, cfg.image_size, seed=5).to(engine.device)
    return batch / seconds_per_call(lambda: engine.invert(x), 5, engine.device)


def bare_loop(inverter, folder: Path, batch: int) -> float:
    files = sorted(folder.glob("*.png"))
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        images = np.stack([decode_image(f.read_bytes(), 256, False, False) for f in files[i : i + batch]])
        invert_images(inverter, images, batch)
    return len(files) / (time.perf_counter() - start)


class NoWorkInversion(InversionJob):
    """Benchmark-only stand-in: the inversion job with a model step that does no work."""

    def work(self, plan):
        work = super().work(plan)
        return Work(work.prepare, no_model, work.write)


def no_model(engine, images: np.ndarray, batch_size: int) -> np.ndarray:
    cfg = engine.config
    return np.zeros((len(images), cfg.num_ws, cfg.style_dim), np.float32)


def job_spec(checkpoint: Path, folder: Path, out: Path, args) -> InversionSpec:
    cpus = os.cpu_count() or 1
    if args.gpu:  # a GPU node: the actor keeps a few cores, decoding gets the rest in 2-CPU tasks
        resources = {"num_actors": 1, "num_gpus_per_actor": 1, "num_cpus_per_actor": 4, "decode_cpus": 2}
    else:
        resources = {"num_actors": 1, "num_cpus_per_actor": cpus - 0.5, "decode_cpus": 0.5}
    return InversionSpec.model_validate(
        {
            "input": {"uri": str(folder), "shard_size": 4 * args.batch},
            "model": {"checkpoint": str(checkpoint), "stages": args.stages},
            "output": {"uri": str(out)},
            "resources": {**resources, "batch_size": args.batch},
            "engine": {"precision": args.precision, "max_batch": args.batch},
        }
    )


def pipeline(checkpoint: Path, folder: Path, args, kind=INVERSION) -> tuple[float, float, float]:
    out = args.work / "pipeline-out"
    shutil.rmtree(out, ignore_errors=True)
    spec = job_spec(checkpoint, folder, out, args)
    if isinstance(kind, NoWorkInversion):  # nothing to gate: the model step does not run the engine
        spec = spec.model_copy(update={"engine": spec.engine.model_copy(update={"modulation": "grouped"})})
        if not args.gpu:  # an actor that runs no model needs little CPU: decoding gets the rest
            cpus = os.cpu_count() or 1
            decode = {"num_cpus_per_actor": 0.5, "decode_cpus": (cpus - 0.5) / max(1, cpus)}
            spec = spec.model_copy(update={"resources": spec.resources.model_copy(update=decode)})
        spec = spec.model_copy(update={"input": spec.input.model_copy(update={"shard_size": args.ceiling_shard})})
    start_ray(None)
    plan = plan_job(spec, kind)
    commits: list[tuple[float, int]] = []
    start = time.perf_counter()
    report = run_plan(plan, progress=lambda stats: commits.append((time.perf_counter(), stats.written)))
    end_to_end = report.written / (time.perf_counter() - start)
    assert report.written == len(list(folder.glob("*.png"))), report.summary()
    res = spec.resources
    ready = min(shards_in_flight(res, os.cpu_count() or 1), len(commits) - 2)  # read while the engine was built
    (first, _), (last, _) = commits[max(ready, 0)], commits[-1]
    steady = sum(n for _, n in commits[ready + 1 :]) / (last - first) if last > first else float("nan")
    return end_to_end, steady, report.first_commit_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--ceiling-images", type=int, default=1024, help="images of the no-work run and the decode loop")
    parser.add_argument("--ceiling-shard", type=int, default=64, help="images per shard of the no-work run")
    parser.add_argument("--stages", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench")
    parser.add_argument("--gpu", action="store_true", help="run the model on a CUDA GPU (actor and bare loop)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint, folder = make_inputs(args.work, args.images, args.stages)
    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if args.gpu else "cpu"
    options = engine_options(job_spec(checkpoint, folder, args.work / "unused", args))
    inverter = build_engine(str(checkpoint), dataclasses.replace(options, cache_uri=None), args.stages, device, gate=False)
    alone = engine_alone(inverter, args.batch)
    before = bare_loop(inverter, folder, args.batch)
    end_to_end, steady, first_commit = pipeline(checkpoint, folder, args)
    _, many = make_inputs(args.work, args.ceiling_images, args.stages)
    ceiling_end_to_end, ceiling, _ = pipeline(checkpoint, many, args, kind=NoWorkInversion())
    after = bare_loop(inverter, folder, args.batch)
    bare = (before + after) / 2
    decoding = decode_loop(many)
    cores = os.cpu_count() or 1
    decoding_all = decode_loop(many, cores)
    card = torch.cuda.get_device_name() if args.gpu else "no GPU"
    print(f"# {os.cpu_count()} CPUs, {card}, torch {torch.__version__}, {args.images} images, {args.stages} stage(s), "
          f"batch {args.batch}, engine {options.name} {options.modulation}")
    print("| path | records/s | relative to the bare loop |")
    print("|---|---|---|")
    print(f"| the engine alone, a batch already on its device | {alone:.3f} | {alone / bare:.2f} |")
    print(f"| bare loop, same engine (read, decode, invert; mean of {before:.3f} before and {after:.3f} after) | {bare:.3f} | 1.00 |")
    print(f"| pipeline, steady state (decode tasks, 1 actor, Parquet commit) | {steady:.3f} | {steady / bare:.2f} |")
    print(f"| pipeline, end to end (with actor start and model load) | {end_to_end:.3f} | {end_to_end / bare:.2f} |")
    print(f"| plain decode loop, one thread (read + decode, no model; {args.ceiling_images} images) | {decoding:.3f} | {decoding / bare:.2f} |")
    print(f"| plain decode loop, {cores} threads | {decoding_all:.3f} | {decoding_all / bare:.2f} |")
    print(f"| pipeline ceiling, steady state (benchmark-only model step that does no work) | {ceiling:.3f} | "
          f"{ceiling / bare:.2f} ({ceiling / decoding:.2f} of the one-thread loop, {ceiling / decoding_all:.2f} of the "
          f"{cores}-thread loop) |")
    print(f"| pipeline ceiling, end to end | {ceiling_end_to_end:.3f} | {ceiling_end_to_end / bare:.2f} |")
    print(f"# first shard committed {first_commit:.1f} s after the run started (engine build, actor start and load included)")


if __name__ == "__main__":
    main()
