"""Inputs and processes for the tests: image files (valid ones and every kind of bad one), WebDataset and
Parquet containers, free ports, and killing a process tree."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def png_bytes(seed: int, size: int = 32, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8).squeeze()
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


def make_image_folder(root: Path, good: int, bad: dict[str, bytes] | None = None, size: int = 32) -> list[str]:
    """``good`` valid RGB PNGs in nested folders plus the named bad files; returns the good keys."""
    keys = []
    for i in range(good):
        key = f"{'ab'[i % 2]}/img_{i:03d}.png"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(png_bytes(i, size))
        keys.append(key)
    for key, data in (bad or {}).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return sorted(keys)


def bad_images() -> dict[str, bytes]:
    good = png_bytes(999)
    return {
        "bad/corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "bad/truncated.png": good[: len(good) // 2],
        "bad/empty.png": b"",
        "bad/grey.png": png_bytes(5, mode="L"),
        "bad/rgba.png": png_bytes(6, mode="RGBA"),
        "bad/big.png": png_bytes(7, size=48),
    }


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A WebDataset shard: the given (member name, bytes) pairs in order."""
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_image_parquet(path: Path, rows: list[tuple[str | None, object]], struct: bool = False) -> Path:
    """A Parquet file with ``key`` and ``image`` columns; ``struct`` stores images as {bytes, path}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [k for k, _ in rows]
    images = [v for _, v in rows]
    if struct:
        images = [None if v is None else {"bytes": v, "path": f"{k}.png"} for k, v in rows]
    pq.write_table(pa.table({"key": keys, "image": images}), path)
    return path


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on once this returns."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def kill_process_tree(process) -> None:
    """SIGKILL a process started with ``start_new_session=True``, its group, and every process under it
    (Ray's workers leave the group), then wait until all are gone."""
    import contextlib
    import os
    import signal

    import psutil

    below = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in below:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait()
    psutil.wait_procs(below, timeout=30)
