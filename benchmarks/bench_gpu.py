"""What the engines make of a GPU: images/s and TFLOP/s of the generator and the inversion, in one run.

    python benchmarks/bench_gpu.py [--batches 8,16,32,64] [--precisions float32,bfloat16,float16]
                                   [--stages 1,2] [--forms grouped,batched,folded,fused,fused-folded]
                                   [--compile] [--aoti] [--aoti-form fused]
                                   [--repeats 5] [--json results.json]

On a CUDA GPU it measures the official-size model (seeded random weights, official file format) and the
card's own bfloat16 matmul rate, and prints, for each precision, generator form (engines.graphs: the research
code's ``grouped``, ``batched``, ``batched`` with the upsampling blur ``folded`` into its convolution, and the
``fused`` generator prepared for inference, with or without the fold) and batch: the generator alone (W+ -> 256 px
reconstruction, as every refinement stage and restoration runs it), then 1- and 2-stage latents and
latents + 256 px, eager and (with ``--compile``) compiled, and (with ``--aoti``) AOTInductor packages with
their compile and load times, with each engine's accuracy-gate verdict.
Without CUDA it runs the same code on the CPU with the ``tiny-64`` preset, so the test suite runs it and
it cannot rot; only GPU numbers belong in BENCHMARKS.md. Timings synchronise the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines import official_checkpoint, write_checkpoint  # noqa: E402
from engines.batching import seconds_per_call  # noqa: E402
from engines.engine import EngineOptions, build_engine  # noqa: E402
from engines.gate import gate_batch  # noqa: E402
from engines.graphs import GENERATOR_FORMS  # noqa: E402
from operators.e2style import E2Style  # noqa: E402
from operators.presets import get_preset  # noqa: E402



def make_checkpoint(folder: Path, preset: str, stages: int) -> str:
    path = folder / f"{preset}-stage{stages}.pt"
    if not path.exists():
        torch.manual_seed(0)
        write_checkpoint(official_checkpoint(E2Style(dataclasses.replace(get_preset(preset), stages=stages))), str(path))
    return str(path)


def matmul_tflops(device: torch.device) -> float:
    """The device's measured dense bfloat16 matmul rate, what the other rates are compared with."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = seconds_per_call(lambda: a @ b, 20 if device.type == "cuda" else 3, device)
    return 2 * n**3 / seconds / 1e12


class CountFlops(TorchDispatchMode):
    """Adds up PyTorch's own flop formulas (convolutions, matrix products) of every op run inside it.
    ``FlopCounterMode`` would do it too, but its module tracker fails on inference-mode graphs."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = flop_registry.get(func._overloadpacket)
        if formula is None:
            # Under inference mode composite ops (conv2d, matmul) arrive whole: decomposed, their parts
            # (convolution, mm) come back through this mode and are counted.
            with self:  # the mode is off while it handles an op; the parts must pass through it again
                out = func.decompose(*args, **kwargs)
            return func(*args, **kwargs) if out is NotImplemented else out
        out = func(*args, **kwargs)
        self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops_of(run) -> int:
    """Multiply-adds x 2 of one call."""
    with CountFlops() as counter:
        run()
    return counter.total


def main(argv: list[str] | None = None) -> list[dict]:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="e2style-ffhq-1024" if cuda else "tiny-64")
    parser.add_argument("--batches", default="8,16,32,64" if cuda else "1,2")
    parser.add_argument("--precisions", default="float32,bfloat16,float16" if cuda else "float32,bfloat16")
    parser.add_argument("--stages", default="1,2")
    parser.add_argument("--forms", default=",".join(GENERATOR_FORMS), help="generator forms to measure")
    parser.add_argument("--compile", action="store_true", help="also torch.compile'd engines (minutes to build)")
    parser.add_argument("--aoti", action="store_true", help="also AOTInductor engines: compile, then load from the cache")
    parser.add_argument("--aoti-form", default="fused", help="the generator form of the AOTInductor engines")
    parser.add_argument("--repeats", type=int, default=5 if cuda else 1)
    parser.add_argument("--work", type=Path, default=None, help="folder for the checkpoints (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    batches = [int(b) for b in args.batches.split(",")]
    peak = matmul_tflops(device)
    card = torch.cuda.get_device_name(device) if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"# {card}; torch {torch.__version__}, CUDA {torch.version.cuda}; preset {args.preset}, random weights")
    print(f"# measured bfloat16 matmul: {peak:.1f} TFLOP/s")
    print("| what | stages | engine | form | batch | images/s | TFLOP/s | % of matmul |")
    print("|---|---|---|---|---|---|---|---|")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        for stages in (int(s) for s in args.stages.split(",")):
            checkpoint = make_checkpoint(work, args.preset, stages)
            for precision in args.precisions.split(","):
                for compiled in (False, True) if args.compile else (False,):
                    for form in args.forms.split(","):
                        rows += bench_engine(checkpoint, stages, precision, compiled, form, batches, args.repeats, device, peak)
                if args.aoti:
                    rows += bench_engine(
                        checkpoint, stages, precision, False, args.aoti_form, batches, args.repeats, device, peak,
                        backend="aoti", cache_uri=str(work / "engines"),
                    )
    if args.json:
        args.json.write_text(json.dumps({"card": card, "torch": torch.__version__, "matmul_tflops": peak, "rows": rows}, indent=1))
    return rows


def bench_engine(
    checkpoint: str, stages: int, precision: str, compiled: bool, form: str, batches: list[int], repeats: int,
    device: torch.device, peak: float, backend: str = "torch", cache_uri: str | None = None,
) -> list[dict]:
    options = EngineOptions(
        backend=backend, precision=precision, compile=compiled, modulation=form, max_batch=max(batches), cache_uri=cache_uri
    )
    started = time.perf_counter()
    try:
        engine = build_engine(checkpoint, options, device=device)
    except (ValueError, RuntimeError) as e:  # a failed gate, a precision the device lacks
        print(f"# {options.name} {form}, {stages} stage(s): not built: {e}", flush=True)
        return []
    verdict = engine.gate_report.describe() if engine.gate_report else "the float32 reference (no gate)"
    print(f"# {options.name} {form}, {stages} stage(s): built in {time.perf_counter() - started:.1f} s; {verdict}", flush=True)
    if backend == "aoti":  # what each actor pays: loading the compiled packages from the cache
        started = time.perf_counter()
        engine = build_engine(checkpoint, options, device=device, gate=False)
        print(f"# {options.name}, {stages} stage(s): loaded from the cache in {time.perf_counter() - started:.1f} s", flush=True)
        form = f"aoti {form}"
    size, cfg = engine.config.image_size, engine.config
    rows = []
    for batch in batches:
        x = gate_batch(batch, cfg.input_channels, size, seed=1).to(device)
        codes = engine.invert(x)
        work = {"latents": lambda: engine.invert(x), "latents + 256 px": lambda: engine.synthesize(engine.invert(x))}
        if stages == 1:  # the generator alone once per precision and form
            work = {"generator -> 256 px": lambda: engine.synthesize(codes), **work}
        for what, run in work.items():
            flops = flops_of(run)
            seconds = seconds_per_call(run, repeats, device)
            tflops = flops / seconds / 1e12
            row = {
                "what": what, "stages": stages, "engine": options.name, "form": form, "batch": batch,
                "images_per_s": batch / seconds, "tflops": tflops, "of_matmul": tflops / peak,
            }
            rows.append(row)
            print(
                f"| {what} | {stages} | {options.name} | {form} | {batch} | {batch / seconds:.3g} | {tflops:.3g} "
                f"| {100 * tflops / peak:.1f}% |",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
