"""Images/s of each engine backend and precision against the official model's eager path, in one run.

    python benchmarks/bench_engines.py [--backends torch,onnxruntime] [--precisions float32]
                                       [--stages 1,2] [--batches 4] [--repeats 2] [--device cpu]

The model is the official-size E2Style (IR-SE50 encoders at 256 px, 1024 generator) with seeded random
weights, written once in the official file format under ``--work``. Work per configuration: invert a
batch (latents only), and invert plus render the 256 px reconstruction of the last stage. The baseline
("official eager") is ``load_inverter``: the research formulation (grouped modulated convolutions,
adaptive pooling, NCHW) in float32 eager PyTorch. Engines are built (and gated) before timing, and the
build time is printed (a cache hit when the graphs or plans are already under ``--work``/engines).
Timings synchronise the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines import load_inverter, official_checkpoint, write_checkpoint  # noqa: E402
from engines.engine import EngineOptions, build_engine  # noqa: E402
from engines.gate import gate_batch  # noqa: E402
from operators.e2style import E2Style  # noqa: E402
from operators.presets import get_preset  # noqa: E402


def make_checkpoint(work: Path, stages: int) -> Path:
    path = work / f"e2style-official-size-stage{stages}.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = E2Style(dataclasses.replace(get_preset("e2style-ffhq-1024"), stages=stages))
        write_checkpoint(official_checkpoint(model), str(path))
    return path


def images_per_second(run, x: torch.Tensor, repeats: int, device: torch.device) -> float:
    run(x)  # warm-up (and compilation)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return repeats * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,onnxruntime")
    parser.add_argument("--precisions", default="float32")
    parser.add_argument("--compile", action="store_true", help="also torch.compile'd torch engines")
    parser.add_argument("--stages", default="1,2")
    parser.add_argument("--batches", default="4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    batches = [int(b) for b in args.batches.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"# {name}, torch {torch.__version__}, official-size model, random weights")
    print("| engine | stages | output | batch | images/s | vs official eager |")
    print("|---|---|---|---|---|---|")
    for stages in (int(s) for s in args.stages.split(",")):
        bench_stages(args, stages, batches, device)
        gc.collect()  # each stage count's models and engines go before the next are built


def bench_stages(args: argparse.Namespace, stages: int, batches: list[int], device: torch.device) -> None:
    checkpoint = str(make_checkpoint(args.work, stages))
    engines = [("official eager float32", load_inverter(checkpoint, device=device))]
    for backend in args.backends.split(","):
        for precision in args.precisions.split(","):
            for compiled in (False, True) if args.compile and backend == "torch" else (False,):
                try:
                    options = EngineOptions(
                        backend=backend, precision=precision, compile=compiled, max_batch=max(batches),
                        cache_uri=str(args.work / "engines"), threads=os.cpu_count() or 0,
                    )
                    started = time.perf_counter()
                    engine = build_engine(checkpoint, options, device=device)
                    built = time.perf_counter() - started
                except (ValueError, RuntimeError) as e:
                    print(f"| {backend} {precision} | {stages} | - | - | skipped: {e} | |")
                    continue
                gate = engine.gate_report.describe() if engine.gate_report else "reference"
                print(f"# {options.name}, {stages} stage(s), built and gated in {built:.0f} s: {gate}", flush=True)
                engines.append((options.name, engine))
    for batch in batches:
        x = gate_batch(batch, 3, 256, seed=1).to(device)
        reference = {}
        for label, runner in engines:
            for output, run in (
                ("latents", lambda x, r=runner: r.invert(x)),
                ("latents + 256 px", lambda x, r=runner: r.synthesize(r.invert(x))),
            ):
                rate = images_per_second(run, x, args.repeats, device)
                reference.setdefault(output, rate)
                print(f"| {label} | {stages} | {output} | {batch} | {rate:.3f} | {rate / reference[output]:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
