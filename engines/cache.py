"""A store of built engines (exported ONNX graphs, TensorRT plans) under a local folder or any fsspec URI.

An entry is two objects: ``<key>.bin`` (the engine) and ``<key>.json`` (what it was built from and the
sha256 of the bytes), the JSON written last so that its presence means the entry is complete. The key
is the sha256 of everything that makes an engine valid, so a changed graph, precision, profile,
library version or GPU is a different key, a miss. An entry whose bytes do not match its digest (a
truncated upload, a disk error) is deleted and reported as a miss, so it is rebuilt and never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import fsspec

log = logging.getLogger(__name__)


def device_identity(device) -> dict[str, str]:
    """What an entry built for ``device`` (a torch.device) is valid on: the GPU model and compute
    capability, or the CPU."""
    import torch

    if device.type != "cuda":
        return {"gpu": "cpu"}
    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


def cache_key(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(fields), sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class CacheEntry:
    key: str
    data: bytes
    hit: bool  # found in the cache (False: built now)


class EngineCache:
    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None):
        self.uri = uri
        self.fs, root = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        self.root = root.rstrip("/")

    def _path(self, key: str, suffix: str) -> str:
        return f"{self.root}/{key}{suffix}"

    def get(self, fields: Mapping[str, Any]) -> bytes | None:
        """The engine stored for ``fields``, or None when there is none or it is damaged (then removed)."""
        key = cache_key(fields)
        meta_path, data_path = self._path(key, ".json"), self._path(key, ".bin")
        if not self.fs.exists(meta_path):
            return None
        try:
            with self.fs.open(meta_path, "rb") as f:
                meta = json.loads(f.read())
            with self.fs.open(data_path, "rb") as f:
                data = f.read()
        except (OSError, ValueError) as e:
            return self._discard(key, f"unreadable: {e}")
        if meta.get("sha256") != hashlib.sha256(data).hexdigest() or meta.get("size") != len(data):
            return self._discard(key, f"{len(data)} bytes do not match the recorded size {meta.get('size')} and digest")
        if meta.get("fields") != json.loads(json.dumps(dict(fields), sort_keys=True, default=str)):
            return self._discard(key, "recorded for other build settings")
        return data

    def put(self, fields: Mapping[str, Any], data: bytes) -> str:
        key = cache_key(fields)
        self.fs.makedirs(self.root, exist_ok=True)
        meta = {"fields": dict(fields), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        self._write(self._path(key, ".bin"), data)
        self._write(self._path(key, ".json"), json.dumps(meta, sort_keys=True, indent=2, default=str).encode())
        return key

    def get_or_build(self, fields: Mapping[str, Any], build: Callable[[], bytes]) -> CacheEntry:
        data = self.get(fields)
        if data is not None:
            return CacheEntry(cache_key(fields), data, hit=True)
        data = build()
        return CacheEntry(self.put(fields, data), data, hit=False)

    def _write(self, path: str, data: bytes) -> None:
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            with self.fs.open(partial, "wb") as f:
                f.write(data)
            self.fs.mv(partial, path)
        finally:
            if self.fs.exists(partial):
                self.fs.rm(partial)

    def _discard(self, key: str, why: str) -> None:
        log.warning("engine cache entry %s in %s is damaged (%s); rebuilding it", key, self.uri, why)
        for suffix in (".json", ".bin"):
            if self.fs.exists(self._path(key, suffix)):
                self.fs.rm(self._path(key, suffix))
        return None
