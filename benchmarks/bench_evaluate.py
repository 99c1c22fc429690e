"""Evaluation throughput per metric: images per second of each metric network and pure metric at the official sizes.

    python benchmarks/bench_evaluate.py [--batch 4] [--repeats 3] [--threads N] [--device cpu|cuda]

What the evaluation job's model step runs per reconstruction, on 256 px images (the released models'
size) in [0, 1], under ``torch.inference_mode``: LPIPS (AlexNet and VGG16 trunks, input and
reconstruction in one pass), the ArcFace IR-SE50 embedding of one image (the pSp face crop pooled to
112 px), the FID Inception-v3 pool3 features of one image (resized to 299 px), and PSNR, SSIM, MS-SSIM
and L2 in float64. The networks have seeded random weights in the published layouts
(``engines.metric_weights.random_metric_weights``: speed does not depend on the values). Each row is the
median over ``--repeats`` timed calls after one warm-up call; CUDA calls are synchronised.
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

from engines.metric_weights import random_metric_weights  # noqa: E402
from operators.metric_nets import LPIPS, ArcFaceIRSE50, FIDInceptionV3  # noqa: E402
from operators.metrics import l2, ms_ssim, psnr, ssim  # noqa: E402
from pipeline.evaluate.model import device_name  # noqa: E402

SIZE = 256


def seconds_per_call(fn, repeats: int, device: torch.device) -> float:
    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    with torch.inference_mode():
        timed()
        return statistics.median(timed() for _ in range(repeats))


def network(module: torch.nn.Module, metric: str, device: torch.device, net: str = "alex") -> torch.nn.Module:
    module.load_state_dict(random_metric_weights(metric, seed=0, net=net))
    return module.eval().to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, SIZE, SIZE, generator=generator).to(device)
    y = (x + 0.05 * torch.randn(x.shape, generator=generator).to(device)).clamp(0, 1)
    x64, y64 = x.double(), y.double()

    alex = network(LPIPS("alex"), "lpips", device)
    vgg = network(LPIPS("vgg"), "lpips", device, net="vgg")
    arcface = network(ArcFaceIRSE50(), "identity", device)
    inception = network(FIDInceptionV3(), "fid", device)
    cases = [
        ("LPIPS, AlexNet (input and reconstruction)", lambda: alex(x, y)),
        ("LPIPS, VGG16 (input and reconstruction)", lambda: vgg(x, y)),
        ("identity: ArcFace IR-SE50 embedding, 112 px face crop", lambda: arcface(y)),
        ("FID: Inception-v3 pool3 features, 299 px", lambda: inception(y)),
        ("PSNR, float64", lambda: psnr(x64, y64)),
        ("SSIM 11x11 Gaussian, float64", lambda: ssim(x64, y64)),
        ("MS-SSIM, 5 scales, float64", lambda: ms_ssim(x64, y64)),
        ("L2, float64", lambda: l2(x64, y64)),
    ]
    print(f"# {device_name(device)}, torch {torch.__version__}, python {platform.python_version()}")
    print(f"# {SIZE} px, batch {args.batch}, median of {args.repeats} calls after a warm-up")
    print("| metric | ms per batch | images/s |")
    print("|---|---|---|")
    for name, fn in cases:
        seconds = seconds_per_call(fn, args.repeats, device)
        print(f"| {name} | {seconds * 1e3:.1f} | {args.batch / seconds:.1f} |")


if __name__ == "__main__":
    main()
