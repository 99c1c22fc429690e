"""An engine's batch, chosen on its own device: a few batch sizes are timed when the engine is built and
the fastest that fits is kept (the smallest of those within ``CLOSE`` of the best: as fast, less memory
and latency). The verdict is stored in the engine cache, keyed by the device, precision, form and
weights, so the actors of a job and later jobs on the same kind of GPU reuse it without timing again.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Mapping

import torch

from engines.cache import EngineCache
from engines.gate import gate_batch

CANDIDATES = (8, 16, 32, 64, 128)
CLOSE = 0.03  # rates within 3% of the best count as equal
REPEATS = 3  # timed calls per candidate, after one warm-up call


def pick_batch(measure: Callable[[int], float], candidates: tuple[int, ...] = CANDIDATES) -> tuple[int, dict[int, float]]:
    """(chosen batch, images/s by batch). ``measure(batch)`` returns images/s; candidates are tried from the
    smallest up and stop at the first that runs out of device memory."""
    rates: dict[int, float] = {}
    for batch in sorted(candidates):
        try:
            rates[batch] = measure(batch)
        except torch.OutOfMemoryError:
            break
    if not rates:
        raise ValueError(f"not even a batch of {min(candidates)} fits in this device's memory")
    best = max(rates.values())
    return min(b for b, rate in rates.items() if rate >= (1 - CLOSE) * best), rates


def invert_rate(engine, batch: int) -> float:
    """images/s of ``engine.invert`` (what every job runs) on a batch of the gate's images."""
    cfg = engine.config
    x = gate_batch(batch, cfg.input_channels, cfg.image_size, seed=3).to(engine.device)
    return batch / seconds_per_call(lambda: engine.invert(x), REPEATS, engine.device)


def seconds_per_call(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Mean seconds of ``run()`` over ``repeats`` calls after one warm-up call (cuDNN's algorithm search,
    compilation, CUDA graph capture), the GPU synchronised around them."""
    run()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    _synchronize(device)
    return (time.perf_counter() - started) / repeats


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cached_pick(
    cache: EngineCache | None, fields: Mapping[str, object], measure: Callable[[int], float]
) -> tuple[int, dict[int, float], bool]:
    """``pick_batch`` through the cache: (batch, rates, whether it was a cache hit)."""
    def build() -> bytes:
        batch, rates = pick_batch(measure)
        return json.dumps({"batch": batch, "rates": {str(b): r for b, r in rates.items()}}).encode()

    if cache is None:
        record, hit = json.loads(build()), False
    else:
        entry = cache.get_or_build({"kind": "batch", **fields}, build)
        record, hit = json.loads(entry.data), entry.hit
    return record["batch"], {int(b): r for b, r in record["rates"].items()}, hit
