"""Images/s of the CPU decode step per input kind, with and without ``input.fast_jpeg``.

    python benchmarks/bench_decode.py [--images 64] [--size 256] [--threads 1,2]

Seeded pictures with detail at several scales are encoded once: 256 px PNG and JPEG (decoded as they are),
1024 px JPEG (resized to ``--size``: the FFHQ case) decoded in full then resized, and the same with
``fast_jpeg`` (decoded at a reduced scale by the JPEG decoder, then resized). Each path runs
``pipeline.core.decode.decode_image`` over all images, one thread or several (as a decode task does with
``resources.decode_cpus`` > 1). The last column is the PSNR of the fast path against the full decode.
Pillow here uses libjpeg-turbo already, so other bindings of the same library would only save call overhead.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.decode import decode_image  # noqa: E402


def photo(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    planes = [
        sum(rng.uniform(0.2, 1) * np.sin(2 * np.pi * (rng.uniform(1, 40) * x + rng.uniform(1, 40) * y + rng.uniform()))
            for _ in range(8))
        for _ in range(3)
    ]
    picture = np.stack(planes, -1) + rng.normal(0, 0.15, (size, size, 3))  # sensor-like noise
    picture = (picture - picture.min()) / (picture.max() - picture.min())
    return (picture * 255).round().astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def rate(blobs: list[bytes], size: int, fast: bool, threads: int) -> float:
    def one(blob):
        return decode_image(blob, size, True, False, fast_jpeg=fast)

    one(blobs[0])
    start = time.perf_counter()
    if threads == 1:
        for blob in blobs:
            one(blob)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, blobs))
    return len(blobs) / (time.perf_counter() - start)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    small = [photo(args.size, i) for i in range(args.images)]
    large = [photo(4 * args.size, i) for i in range(args.images)]
    inputs = {
        f"PNG {args.size} px": ([encode(p, "PNG") for p in small], False),
        f"JPEG {args.size} px": ([encode(p, "JPEG") for p in small], False),
        f"JPEG {4 * args.size} px -> {args.size}, full decode": ([encode(p, "JPEG") for p in large], False),
        f"JPEG {4 * args.size} px -> {args.size}, fast_jpeg": ([encode(p, "JPEG") for p in large], True),
    }
    print(f"Pillow {Image.__version__}, libjpeg-turbo {features.version_feature('libjpeg_turbo')}")
    print("| input | " + " | ".join(f"images/s, {t} thread{'s' if t > 1 else ''}" for t in threads) + " | PSNR vs full decode |")
    print("|---|" + "---|" * (len(threads) + 1))
    for name, (blobs, fast) in inputs.items():
        rates = [rate(blobs, args.size, fast, t) for t in threads]
        quality = ""
        if fast:
            quality = f"{np.mean([psnr(decode_image(b, args.size, True, False, fast_jpeg=True), decode_image(b, args.size, True, False)) for b in blobs]):.1f} dB"
        print(f"| {name} | " + " | ".join(f"{r:.1f}" for r in rates) + f" | {quality} |")


if __name__ == "__main__":
    main()
