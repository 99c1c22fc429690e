"""One run at a time per output: an exclusive lease kept in the output itself.

A run holds the lease while ``_lock/<generation>.json`` exists and carries its run id. It takes one by
creating the next generation's file exclusively (``storage.create_exclusively``: an ``O_EXCL``-style
link on disks, a conditional PUT on S3), so of two runs racing, one wins. While it runs, a heartbeat
thread rewrites the file every ``HEARTBEAT_S``; a lease is stale when its heartbeat is older than
``STALE_AFTER_S``, or when it was taken on this host by a process that no longer exists. A stale lease
is taken over by creating the generation after it and deleting it; the run that lost it finds its file
gone at its next heartbeat or commit (``check``), and stops committing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fsspec import AbstractFileSystem

from pipeline.core.storage import create_exclusively, is_local, join, write_atomically

LOCK_DIR = "_lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class LockHeld(RuntimeError):
    """Another run holds the output's lease."""


class LockLost(RuntimeError):
    """This run's lease was taken over (its heartbeat stalled past ``STALE_AFTER_S``)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(holder: dict[str, Any]) -> str:
    age = time.time() - holder.get("heartbeat", 0)
    return (
        f"run {holder.get('run_id')} (pid {holder.get('pid')} on {holder.get('host')}, started "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(holder.get('started', 0)))}, last heartbeat {age:.0f} s ago)"
    )


@dataclass
class RunLock:
    fs: AbstractFileSystem
    root: str
    generation: int
    holder: dict[str, Any]
    lost: str | None = None  # why the lease was lost, once the heartbeat finds out
    made_root: bool = False  # the output folder did not exist before the lease (removed again if left empty)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def folder(self) -> str:
        return join(self.root, LOCK_DIR)

    @property
    def path(self) -> str:
        return lock_path(self.root, self.generation)

    @classmethod
    def acquire(cls, fs: AbstractFileSystem, root: str, stale_after: float = STALE_AFTER_S) -> "RunLock":
        """Take the output's lease or raise LockHeld naming the run that holds it."""
        made_root = not fs.exists(root)
        leases = read_leases(fs, root)
        for generation, holder in leases.items():
            if not is_stale(holder, stale_after):
                raise LockHeld(f"another run is writing this output: {describe(holder)}")
        generation = max(leases, default=0) + 1
        now = time.time()
        holder = {
            "run_id": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now,
            "heartbeat": now,
            "generation": generation,
        }
        try:
            create_exclusively(fs, lock_path(root, generation), json.dumps(holder).encode())
        except FileExistsError:
            raise LockHeld("another run took this output's lease at the same moment") from None
        lock = cls(fs, root, generation, holder, made_root=made_root)
        # A run that judged an older lease stale may have created its file beside ours: whoever finds
        # a live lease other than its own backs off, so two runs never both go on.
        for other, theirs in read_leases(fs, root).items():
            if other != generation and not is_stale(theirs, stale_after) and other not in leases:
                lock.release()
                raise LockHeld(f"another run is writing this output: {describe(theirs)}")
        for other in leases:  # the stale leases we replace
            if fs.exists(lock_path(root, other)):
                fs.rm(lock_path(root, other))
        return lock

    def check(self) -> None:
        """Raise LockLost unless this run still holds the lease."""
        check_fence(self.fs, self.fence())

    def refresh(self) -> None:
        self.check()
        self.holder = {**self.holder, "heartbeat": time.time()}
        text = json.dumps(self.holder).encode()
        write_atomically(self.fs, self.path, lambda f: f.write(text), join(self.folder, "_tmp"))

    def start_heartbeat(self, every: float = HEARTBEAT_S) -> None:
        def beat():
            while not self._stop.wait(every):
                try:
                    self.refresh()
                except LockLost as e:
                    self.lost = str(e)
                    return
                except Exception:  # a storage hiccup: the next beat tries again, well inside STALE_AFTER_S
                    continue

        self._thread = threading.Thread(target=beat, name="output-lease-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            holder = _read(self.fs, self.path)
            if holder.get("run_id") == self.holder["run_id"]:
                self.fs.rm(self.path)
        except FileNotFoundError:
            pass
        if is_local(self.fs):  # leave no empty folders behind on disks (object stores have none)
            for folder in (join(self.folder, "_tmp"), self.folder, *([self.root] if self.made_root else [])):
                try:
                    os.rmdir(folder)
                except OSError:
                    pass

    def fence(self) -> tuple[str, str]:
        """What a commit in another process checks (``check_fence``): this lease's path and run id."""
        return self.path, self.holder["run_id"]


def lock_path(root: str, generation: int) -> str:
    return join(root, LOCK_DIR, f"{generation:012d}.json")


def _read(fs: AbstractFileSystem, path: str) -> dict[str, Any]:
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def read_leases(fs: AbstractFileSystem, root: str) -> dict[int, dict[str, Any]]:
    """Every lease file in the output, by generation. One that cannot be read counts as fresh until its
    file is older than the stale limit (a writer may be part-way on a store without atomic writes)."""
    folder = join(root, LOCK_DIR)
    fs.invalidate_cache(folder)
    if not fs.exists(folder):
        return {}
    leases = {}
    for info in fs.ls(folder, detail=True):
        name = info["name"].rsplit("/", 1)[-1]
        if info.get("type") != "file" or not name.endswith(".json") or not name[:-5].isdigit():
            continue
        try:
            leases[int(name[:-5])] = _read(fs, info["name"])
        except (OSError, ValueError):
            modified = info.get("mtime") or info.get("LastModified")
            stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
            leases[int(name[:-5])] = {"run_id": "unreadable", "heartbeat": stamp}
    return leases


def is_stale(holder: dict[str, Any], stale_after: float = STALE_AFTER_S) -> bool:
    if time.time() - holder.get("heartbeat", 0) > stale_after:
        return True
    same_host = holder.get("host") == socket.gethostname()
    return same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"])


def check_fence(fs: AbstractFileSystem, fence: tuple[str, str]) -> None:
    """Raise LockLost unless the lease at ``fence[0]`` still carries run id ``fence[1]``."""
    path, run_id = fence
    fs.invalidate_cache(path.rsplit("/", 1)[0])
    try:
        holder = _read(fs, path)
    except FileNotFoundError:
        holder = {}
    if holder.get("run_id") != run_id:
        raise LockLost(
            f"this run's lease on the output was taken over by another run (its heartbeat stalled for more "
            f"than {STALE_AFTER_S:.0f} s); it stopped committing"
        )
