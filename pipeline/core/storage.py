"""fsspec helpers: filesystems from URLs, joined paths, writes that appear only when complete, exclusive
creation, and where two URIs point."""

from __future__ import annotations

import os
import posixpath
import random
import time
import uuid
from typing import Any, Callable, Mapping

import fsspec
from fsspec import AbstractFileSystem

_GLOB_CHARS = "*?["


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """(filesystem, path without protocol) for a local path or URL."""
    return fsspec.core.url_to_fs(uri, **dict(storage_options or {}))


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def is_local(fs: AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols or "local" in protocols


ATTEMPTS = 4  # tries of a step that meets a transient storage error
BACKOFF_S = 1.0  # wait before the second try; doubled for each later one, with jitter
# OSErrors that another try cannot mend: the storage answered, and the answer is no.
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def with_retries(step: Callable[[], Any], attempts: int | None = None, backoff: float | None = None) -> Any:
    """``step()``, tried again after a transient storage error (a dropped connection, a throttled or
    failing object store: OSError other than ``PERMANENT``), up to ``attempts`` times in all.

    Ray retries a task whose worker died, not one that raised; without this one S3 hiccup would fail a
    job. Only idempotent steps belong here (reads; writes that commit last).
    """
    attempts = ATTEMPTS if attempts is None else attempts
    backoff = BACKOFF_S if backoff is None else backoff
    for attempt in range(attempts):
        try:
            return step()
        except PERMANENT:
            raise
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(backoff * 2**attempt * random.uniform(0.5, 1.5))


def write_atomically(fs: AbstractFileSystem, path: str, write: Callable[[Any], None], tmp_dir: str) -> None:
    """Write through ``write(file)`` to a unique temporary file under ``tmp_dir``, then move it to ``path``.

    Readers never see a partial file under ``path``: on local disks the move is a rename; on object
    stores it is a copy of a complete object. A crash leaves only a stray ``*.partial`` in ``tmp_dir``.
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


def create_exclusively(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Create ``path`` holding ``data``, or raise FileExistsError if it exists: of two writers racing for
    one path exactly one wins, and nobody sees it part-written.

    Local disks: a complete temporary file hard-linked to the path (link fails if the path exists).
    S3: a PUT with ``If-None-Match: *`` (a conditional write). Other stores: a check then a write.
    """
    fs.makedirs(fs._parent(path), exist_ok=True)
    if is_local(fs):
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return
    fs.pipe_file(path, data, mode="create")


def is_glob(fs: AbstractFileSystem, path: str) -> bool:
    """Whether ``path`` is a pattern. On HTTP a ``?`` starts the query (a presigned URL's signature)."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    if "http" in protocols or "https" in protocols:
        return any(ch in path.split("?", 1)[0] for ch in "*[")
    return any(ch in path for ch in _GLOB_CHARS)


def static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = pattern
    for ch in _GLOB_CHARS:
        head = head.split(ch, 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def location(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """(protocol, normalised path) of where a URI points: ``file://``, ``./``, ``//``, ``..`` and trailing
    slashes spelled away, and local symbolic links resolved; a glob stands for its folder."""
    fs, path = filesystem(uri, storage_options)
    path = static_prefix(path) if is_glob(fs, path) else path
    if is_local(fs):
        return "file", os.path.realpath(path or ".")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, posixpath.normpath("/" + path.split("?", 1)[0])


def overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether two locations are the same or one lies inside the other."""
    if a[0] != b[0]:
        return False
    x, y = a[1].rstrip("/") + "/", b[1].rstrip("/") + "/"
    return x.startswith(y) or y.startswith(x)
