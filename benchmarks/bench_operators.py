"""CPU seconds per image of one E2Style encoder stage and of the 1024 StyleGAN2 generator, official sizes.

    python benchmarks/bench_operators.py [--batches 1 8] [--repeats 3] [--threads N]

Eager float32 under ``torch.inference_mode``, random weights (speed does not depend on their values).
Each row is the median over ``--repeats`` timed calls after one warm-up call. Every case is measured
for this project's operators (the generator in both modulation forms) and, in the same run, for the research code's formulation (per-sample
grouped convolutions, FIR filters over channels folded into the batch), restated in
``tests/official_reference.py``; the ratio column compares the two.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import official_reference as research  # noqa: E402
from operators.e2style import E2StyleEncoder, EncoderConfig  # noqa: E402
from operators.stylegan2 import Generator, GeneratorConfig  # noqa: E402

OFFICIAL_BLOCK_STARTS = (0, 3, 7, 21, 24)


def seconds_per_call(fn, repeats: int) -> float:
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    encoder = E2StyleEncoder(EncoderConfig(), 3).eval()
    encoder_state = {k: v for k, v in encoder.state_dict().items()}
    generator = Generator(GeneratorConfig(modulation="batched")).eval()
    generator_state = generator.state_dict()
    grouped = Generator(GeneratorConfig(modulation="grouped")).eval()
    grouped.load_state_dict(generator_state)

    print(f"# {cpu_name()}, {args.threads} threads, torch {torch.__version__}, python {platform.python_version()}")
    print(f"# median of {args.repeats} calls after a warm-up, seconds per image")
    print("| model | batch | this project (s/img) | research formulation (s/img) | speed-up |")
    print("|---|---|---|---|---|")
    pool = torch.nn.functional.avg_pool2d
    for batch in args.batches:
        x = torch.randn(batch, 3, 256, 256)
        ours = seconds_per_call(lambda: encoder(x), args.repeats) / batch
        theirs = seconds_per_call(
            lambda: research.encoder(encoder_state, "", x, OFFICIAL_BLOCK_STARTS, 512), args.repeats
        ) / batch
        print(f"| encoder stage, 256 px | {batch} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x |", flush=True)
    for batch in args.batches:
        ws = torch.randn(batch, 18, 512)
        theirs = seconds_per_call(
            lambda: torch.nn.functional.adaptive_avg_pool2d(research.generator(generator_state, ws), 256), args.repeats
        ) / batch
        for form, model in (("batched", generator), ("grouped", grouped)):
            ours = seconds_per_call(lambda: pool(model(ws), 4), args.repeats) / batch
            print(
                f"| generator 1024 + pool to 256, {form} modulation | {batch} | {ours:.3f} | {theirs:.3f} "
                f"| {theirs / ours:.2f}x |",
                flush=True,
            )

if __name__ == "__main__":
    main()
