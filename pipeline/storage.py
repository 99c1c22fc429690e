"""fsspec helpers: filesystems from URLs, joined paths, and writes that appear only when complete."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Mapping

import fsspec
from fsspec import AbstractFileSystem


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """(filesystem, path without protocol) for a local path or URL."""
    return fsspec.core.url_to_fs(uri, **dict(storage_options or {}))


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def write_atomically(fs: AbstractFileSystem, path: str, write: Callable[[Any], None], tmp_dir: str) -> None:
    """Write through ``write(file)`` to a unique temporary file under ``tmp_dir``, then move it to ``path``.

    Readers never see a partial file under ``path``: on local disks the move is a rename; on object
    stores it is a copy of a complete object. A crash leaves only a stray file in ``tmp_dir``.
    """
    tmp = join(tmp_dir, f"{uuid.uuid4().hex}.partial")
    fs.makedirs(tmp_dir, exist_ok=True)
    try:
        with fs.open(tmp, "wb") as f:
            write(f)
        fs.makedirs(fs._parent(path), exist_ok=True)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
