"""The parts that keep a job from losing, duplicating or leaking data, without Ray: the output lease,
what the job owns, where URIs point, redaction, retries of transient storage errors, unwritable names."""

import hashlib
import json
import os
import threading
import time

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from pipeline.core import lock as lock_module
from pipeline.core.images import output_names
from pipeline.core.lock import LockHeld, LockLost, RunLock, check_fence, read_leases
from pipeline.core.secrets import redact_text, redact_uri, spec_secrets
from pipeline.core.store import OutputStore, latent_table
from pipeline.core.storage import create_exclusively, location, overlap, with_retries


def local_fs(tmp_path):
    fs, root = fsspec.core.url_to_fs(str(tmp_path / "out"))
    return fs, root


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    """(filesystem, root) of an output on disk and on the loopback S3 server."""
    if request.param == "local":
        return local_fs(tmp_path)
    endpoint = request.getfixturevalue("s3_server")
    fs = fsspec.filesystem("s3", endpoint_url=endpoint)
    bucket = f"lease-{abs(hash(str(tmp_path))) % 10**8}"
    fs.mkdir(bucket)
    return fs, f"{bucket}/out"


def test_exactly_one_of_racing_creators_wins(output):
    fs, root = output
    path = f"{root}/race.json"
    outcomes = []

    def create(i):
        try:
            create_exclusively(fs, path, json.dumps({"writer": i}).encode())
            outcomes.append(i)
        except FileExistsError:
            pass

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 1
    assert json.loads(fs.cat_file(path)) == {"writer": outcomes[0]}


def test_a_second_run_is_refused_while_the_lease_is_live_and_takes_it_when_stale(output, monkeypatch):
    fs, root = output
    first = RunLock.acquire(fs, root)
    with pytest.raises(LockHeld, match=f"run {first.holder['run_id']} \\(pid {os.getpid()} on "):
        RunLock.acquire(fs, root)
    first.check()
    # The first run stalls: its heartbeat is older than the stale limit, so a second run takes over.
    stalled = {**first.holder, "heartbeat": time.time() - lock_module.STALE_AFTER_S - 1}
    fs.pipe_file(first.path, json.dumps(stalled).encode())
    second = RunLock.acquire(fs, root)
    assert second.generation == first.generation + 1
    assert list(read_leases(fs, root)) == [second.generation]
    with pytest.raises(LockLost, match="taken over by another run"):
        first.check()
    with pytest.raises(LockLost):  # what a writer of the stalled run checks before committing
        check_fence(fs, first.fence())
    check_fence(fs, second.fence())
    first.release()  # releasing a lease it lost leaves the new holder's alone
    second.check()
    second.release()
    assert read_leases(fs, root) == {}
    RunLock.acquire(fs, root).release()


def test_a_lease_of_a_dead_process_on_this_host_is_stale_at_once(tmp_path):
    fs, root = local_fs(tmp_path)
    held = RunLock.acquire(fs, root)
    dead = {**held.holder, "pid": 2**22 + 12345}  # above Linux's pid_max
    fs.pipe_file(held.path, json.dumps(dead).encode())
    taker = RunLock.acquire(fs, root)
    assert taker.generation == 2
    taker.release()


def test_the_heartbeat_keeps_the_lease_fresh_and_notices_a_takeover(tmp_path):
    fs, root = local_fs(tmp_path)
    held = RunLock.acquire(fs, root)
    beat = held.holder["heartbeat"]
    held.start_heartbeat(every=0.05)
    time.sleep(0.3)
    assert read_leases(fs, root)[held.generation]["heartbeat"] > beat
    fs.rm(held.path)  # what a run that judged it stale does
    deadline = time.time() + 5
    while held.lost is None and time.time() < deadline:
        time.sleep(0.05)
    assert "taken over by another run" in held.lost
    held.release()
    assert not (tmp_path / "out" / "_lock").exists()


def test_a_fenced_store_commits_nothing_after_losing_its_lease(tmp_path):
    fs, root = local_fs(tmp_path)
    held = RunLock.acquire(fs, root)
    store = OutputStore(str(tmp_path / "out"), {}, held.fence())
    table = latent_table(["a"], ["file:///a"], np.zeros((1, 2, 3), np.float32), {}, "float32")
    store.write_shard("shard-00000", table, [], 10, time.time(), {"inputs": ["a"]})
    assert "shard-00000" in store.committed()
    fs.rm(held.path)
    with pytest.raises(LockLost):
        store.write_shard("shard-00001", table, [], 10, time.time(), {"inputs": ["a"]})
    assert "shard-00001" not in store.committed()


@pytest.mark.parametrize(
    "spelling",
    ["{d}", "{d}/", "{d}/./", "{d}//", "file://{d}", "file://{d}/", "{d}/sub/..", "{link}", "{d}/inner", "{parent}", "{d}/*.png"],
)
def test_locations_that_overlap_whatever_their_spelling(tmp_path, spelling):
    d = tmp_path / "data"
    d.mkdir()
    (d / "sub").mkdir()
    (tmp_path / "link").symlink_to(d)
    uri = spelling.format(d=d, link=tmp_path / "link", parent=tmp_path)
    assert overlap(location(str(d)), location(uri))
    assert overlap(location(uri), location(str(d)))


def test_locations_that_do_not_overlap(tmp_path):
    assert not overlap(location(str(tmp_path / "data")), location(str(tmp_path / "data2")))
    assert not overlap(location("s3://bucket/data"), location(str(tmp_path / "bucket" / "data")))
    assert overlap(location("s3://bucket/faces/"), location("s3://bucket//faces/./latents"))
    assert not overlap(location("s3://bucket/faces"), location("s3://bucket/faces-latents"))


def image_rows(store: OutputStore, names: dict[str, str]) -> pa.Table:
    """An image job's rows for shard-00000: key -> the name of its image."""
    keys = list(names)
    table = latent_table(keys, [f"file:///{k}" for k in keys], np.zeros((len(keys), 2, 3), np.float32), {}, "float32")
    return table.append_column("image", pa.array([store.image_uri("shard-00000", names[k]) for k in keys]))


def test_cleanup_and_clear_remove_only_what_the_job_recorded(tmp_path):
    out = tmp_path / "out"
    store = OutputStore(str(out), {})
    table = image_rows(store, {"a": "a.png"})
    store.write_shard("shard-00000", table, [("b", "file:///b", "bad")], 10, time.time(), {"inputs": ["a", "b"]},
                      images={"a.png": b"png"}, preview=b"preview")
    store.write_job({"job": "inversion"})
    # An interrupted write of shard 1: its record and data exist, its stats do not.
    store.write_shard("shard-00001", table.slice(0, 0), [], 10, time.time(), {"inputs": []}, images={"x/y.png": b"1"})
    store.uncommit("shard-00001")
    users = {
        "shard-list.txt": b"mine",
        "shard-00007.parquet": b"not the job's",
        "_images/holiday.png": b"mine too",
        "_images/shard-00003/a.png": b"a folder named like the job's",
        "images/shard-00000/a.png": b"a folder named like the job's before it used _images",
        "_rejects/notes.txt": b"mine",
        "_tmp/keep.txt": b"mine",
    }
    for name, data in users.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    (out / "_tmp" / "0123.partial").write_bytes(b"a crashed atomic write")

    assert store.remove_uncommitted() == ["shard-00001"]
    assert not (out / "shard-00001.parquet").exists() and not (out / "_images" / "shard-00001").exists()
    assert not (out / "_tmp" / "0123.partial").exists()
    assert store.unowned(["shard-00003", "shard-00007", "shard-00008"], store.committed()) == [
        f"{store.root}/_images/shard-00003", f"{store.root}/shard-00007.parquet"
    ]
    store.clear()
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == sorted(users)
    assert {name: (out / name).read_bytes() for name in users} == users


def test_clear_finds_the_files_of_shards_committed_before_records_existed(tmp_path):
    out = tmp_path / "out"
    store = OutputStore(str(out), {})
    table = image_rows(store, {"a": "a/b.png"})
    store.write_shard("shard-00000", table, [("c", "s", "e")], 10, time.time(), {"inputs": ["a", "c"]},
                      images={"a/b.png": b"png"}, preview=b"p", preview_rows=1)
    (out / "_files" / "shard-00000.json").unlink()  # as an older version left it
    (out / "_images" / "other.png").write_bytes(b"user")
    store.clear()
    assert [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()] == ["_images/other.png"]


def test_redaction_of_urls_and_option_values():
    url = "https://user:PASS@example.com:8443/faces/a.png?X-Amz-Signature=SIG&X-Amz-Security-Token=TOK#member.png"
    assert redact_uri(url) == "https://example.com:8443/faces/a.png?X-Amz-Signature=***&X-Amz-Security-Token=***#member.png"
    assert redact_uri("s3://bucket/a.tar#x/y.png") == "s3://bucket/a.tar#x/y.png"
    assert redact_uri("/data/odd?name.png") == "/data/odd?name.png"  # a local path is no URL
    text = f"cannot read {url}: 403 for key AKIAEXAMPLE."
    assert redact_text(text, {"AKIAEXAMPLE"}) == (
        "cannot read https://example.com:8443/faces/a.png?X-Amz-Signature=***&X-Amz-Security-Token=***#member.png: "
        "403 for key ***."
    )


def test_spec_secrets_are_every_storage_option_value(tiny_checkpoint, tmp_path):
    from pipeline.inversion.spec import InversionSpec

    spec = InversionSpec.model_validate({
        "input": {"uri": "s3://b/in", "storage_options": {"key": "AKIA-IN", "client_kwargs": {"headers": {"X": "HDR-VALUE"}}}},
        "model": {"checkpoint": str(tiny_checkpoint), "storage_options": {"token": "MODEL-TOKEN"}},
        "output": {"uri": str(tmp_path), "storage_options": {"secret": "OUT-SECRET", "anon": False}},
        "engine": {"cache_storage_options": {"password": "CACHE-PASS"}},
    })
    assert spec_secrets(spec) == {"AKIA-IN", "HDR-VALUE", "MODEL-TOKEN", "OUT-SECRET", "CACHE-PASS"}


def test_a_presigned_signature_does_not_change_the_spec_fingerprint(tiny_checkpoint, tmp_path):
    from pipeline.inversion.spec import InversionSpec

    def spec(signature):
        return InversionSpec.model_validate({
            "input": {"uri": [f"https://h/a.png?X-Amz-Signature={signature}"]},
            "model": {"checkpoint": f"https://h/m.pt?X-Amz-Signature={signature}"},
            "output": {"uri": str(tmp_path)},
        })

    assert spec("one").output_fingerprint() == spec("two").output_fingerprint()


def test_transient_storage_errors_are_retried_with_backoff_and_others_are_not():
    calls = []

    def flaky():
        calls.append(time.time())
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "done"

    assert with_retries(flaky, attempts=4, backoff=0.01) == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(OSError, match="slow down"):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(OSError("slow down")), attempts=3, backoff=0.01)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(FileNotFoundError):
        with_retries(lambda: calls.append(1) or open("/nowhere/at/all"), attempts=3, backoff=0.01)
    assert len(calls) == 1  # a missing file is an answer, not a hiccup
    with pytest.raises(ValueError):
        with_retries(lambda: calls.append(1) or int("x"), attempts=3, backoff=0.01)
    assert len(calls) == 2


def test_unwritable_output_names_become_reasons_per_record():
    keys = ["a b.png", "a_b.png", "x" * 300 + ".png", "ok.png", "deep/" * 250 + "z.png"]
    rows = [(r, variant, {}) for r in range(len(keys)) for variant in ("s-1", "s+1")]
    names, problems = output_names(rows, keys, "png", taken={"ok.s+1.png"}, folder_bytes=40)
    assert set(problems) == {2, 4}
    assert "too long (308 bytes in one name, at most 255" in problems[2]
    assert "in the path, at most 1024" in problems[4]
    assert [n is None for n in names] == [r in problems for r, _, _ in rows]
    # Names that collide get a hash instead of overwriting: a committed image, or another record's.
    assert names[2] == "a_b.s-1-" + hashlib.sha256(b"a_b.png\ns-1").hexdigest()[:8] + ".png"
    assert names[7] == "ok.s+1-" + hashlib.sha256(b"ok.png\ns+1").hexdigest()[:8] + ".png"
    written = [n for n in names if n is not None]
    assert len(set(written)) == len(written) and "ok.s+1.png" not in written
    assert all(not n.startswith(("/", "..")) and "/../" not in n for n in written)


def test_a_retry_of_an_image_shard_uncommits_it_before_replacing_any_image(tmp_path, monkeypatch):
    out = tmp_path / "out"
    store = OutputStore(str(out), {})

    def rows(keys):
        return image_rows(store, {k: f"{k}.png" for k in keys})

    store.write_shard("shard-00000", rows(["a"]), [("b", "file:///b", "truncated")], 10, time.time(),
                      {"inputs": ["a", "b"]}, images={"a.png": b"a"})
    seen = []

    def image_write_that_dies(shard, images):
        seen.append(("committed" if "shard-00000" in store.committed() else "uncommitted", sorted(images)))
        raise ConnectionResetError("the bucket went away")

    monkeypatch.setattr(store, "_write_images", image_write_that_dies)
    monkeypatch.setattr("pipeline.core.storage.BACKOFF_S", 0.01)
    with pytest.raises(ConnectionResetError):
        store.retry_rejects("shard-00000", rows(["b"]), [], 10, time.time(), images={"b.png": b"b"})
    assert seen[0] == ("uncommitted", ["b.png"])  # the shard was uncommitted before any image was touched
    assert "shard-00000" not in store.committed()
    assert json.loads((out / "_files" / "shard-00000.json").read_text())["files"][-1] == "_images/shard-00000/b.png"
    assert store.remove_uncommitted() == ["shard-00000"]  # the next run redoes it whole
    assert not (out / "_images").exists() or not any((out / "_images").rglob("*.png"))


def test_cleanup_on_object_storage_removes_recorded_files_in_bulk_and_keeps_the_users(output):
    fs, root = output
    uri = root if fs.protocol == "file" or "file" in fs.protocol else f"s3://{root}"
    store = OutputStore(uri, dict(fs.storage_options))
    table = image_rows(store, {"a": "a.png"})
    store.write_shard("shard-00000", table, [], 10, time.time(), {"inputs": ["a"]}, images={"a.png": b"1", "b/c.png": b"2"})
    store.uncommit("shard-00000")
    fs.pipe_file(f"{root}/_images/shard-00000/user.png", b"the user's")  # inside a folder named like the job's
    fs.pipe_file(f"{root}/shard-00001.parquet", b"the user's too")
    assert store.unowned(["shard-00000", "shard-00001"], store.committed()) == [store.data_path("shard-00001")]
    assert store.remove_uncommitted() == ["shard-00000"]
    fs.invalidate_cache()
    left = sorted(p[len(root) + 1 :] for p in fs.find(root))
    assert left == ["_images/shard-00000/user.png", "shard-00001.parquet"]
