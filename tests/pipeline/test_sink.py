import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.store import OutputStore, latent_table

PROVENANCE = {"checkpoint": "m.pt", "stages": 2}


def codes(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 10, 32)).astype(np.float32)


def write(store, shard="shard-00000", n=3, rejects=(), dtype="float32", seed=0):
    keys = [f"k{i}" for i in range(n)]
    table = latent_table(keys, [f"file:///{k}" for k in keys], codes(n, seed), PROVENANCE, dtype)
    return store.write_shard(shard, table, list(rejects), 2, 0.0, {"inputs": keys})


def test_float16_latents_round_to_half(tmp_path):
    store = OutputStore(str(tmp_path), {})
    write(store, dtype="float16")
    table = pq.read_table(tmp_path / "shard-00000.parquet")
    assert table.schema.field("w_plus").type == pa.fixed_shape_tensor(pa.float16(), (10, 32))
    np.testing.assert_array_equal(table.column("w_plus").combine_chunks().to_numpy_ndarray(), codes(3).astype(np.float16))


def test_a_shard_with_every_record_rejected_gets_an_empty_file(tmp_path):
    store = OutputStore(str(tmp_path), {})
    stats = write(store, n=0, rejects=[("bad.png", "file:///bad.png", "empty file (0 bytes)")])
    assert (stats["records"], stats["written"], stats["rejected"]) == (1, 0, 1)
    assert pq.read_table(tmp_path / "shard-00000.parquet").num_rows == 0
    rejects = pq.read_table(tmp_path / "_rejects" / "shard-00000.parquet").to_pylist()
    assert rejects == [{"key": "bad.png", "source": "file:///bad.png", "error": "empty file (0 bytes)"}]


def test_stats_are_written_last_and_commit_the_shard(tmp_path, monkeypatch):
    store = OutputStore(str(tmp_path), {})

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write(store)
    assert store.committed() == {}
    assert not (tmp_path / "shard-00000.parquet").exists()
    assert not list((tmp_path / "_tmp").glob("*"))  # the partial file was removed
    monkeypatch.undo()
    write(store)
    assert store.committed()["shard-00000"]["written"] == 3


def test_a_retry_without_rejects_removes_the_stale_rejects_file(tmp_path):
    store = OutputStore(str(tmp_path), {})
    write(store, rejects=[("x", "file:///x", "cannot decode image")])
    assert (tmp_path / "_rejects" / "shard-00000.parquet").exists()
    stats = write(store)
    assert stats["rejects_file"] is None and not (tmp_path / "_rejects" / "shard-00000.parquet").exists()


def test_clear_removes_the_jobs_files_only(tmp_path):
    store = OutputStore(str(tmp_path), {})
    write(store)
    store.write_job(PROVENANCE)
    store.write_manifest(PROVENANCE, [json.loads((tmp_path / "_stats" / "shard-00000.json").read_text())])
    (tmp_path / "README.txt").write_text("the user's own file")
    store.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.txt"]
