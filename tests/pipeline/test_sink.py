import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.store import OutputStore, latent_codes, latent_table

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
    row = pa.list_(pa.field("element", pa.float16(), nullable=False), 32)
    assert table.schema.field("w_plus").type == pa.list_(pa.field("element", row, nullable=False), 10)
    np.testing.assert_array_equal(latent_codes(table), codes(3).astype(np.float16))
    assert latent_codes(table).dtype == np.float16


def test_a_shard_with_every_record_rejected_gets_an_empty_file(tmp_path):
    store = OutputStore(str(tmp_path), {})
    stats = write(store, n=0, rejects=[("bad.png", "file:///bad.png", "empty file (0 bytes)")])
    assert (stats.records, stats.written, stats.rejected) == (1, 0, 1)
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
    assert store.committed()["shard-00000"].written == 3


def test_a_retry_without_rejects_removes_the_stale_rejects_file(tmp_path):
    store = OutputStore(str(tmp_path), {})
    write(store, rejects=[("x", "file:///x", "cannot decode image")])
    assert (tmp_path / "_rejects" / "shard-00000.parquet").exists()
    stats = write(store)
    assert stats.rejects_file is None and not (tmp_path / "_rejects" / "shard-00000.parquet").exists()


def test_clear_removes_the_jobs_files_only(tmp_path):
    store = OutputStore(str(tmp_path), {})
    write(store)
    store.write_job(PROVENANCE)
    store.write_manifest(PROVENANCE, [store.committed_stats("shard-00000")])
    (tmp_path / "README.txt").write_text("the user's own file")
    store.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.txt"]


def test_stats_round_trip_and_stats_of_older_versions_still_read():
    from pipeline.core.payloads import ShardStats

    images = ShardStats("shard-00002", 3, 2, 1, "shard-00002.parquet", "_rejects/shard-00002.parquet", rows=4,
                        seconds=1.5, committed_at="2026-11-27T00:00:00Z", inputs=("a.png", "b.png", "c.png"),
                        preview_rows=2, retries=1, reject_reasons={"empty file": 1}, metrics={"psnr": [21.5, 30.25]})
    assert ShardStats.from_json(json.loads(json.dumps(images.to_json()))) == images
    assert images.read == {"inputs": ("a.png", "b.png", "c.png")}
    # A WebDataset shard committed before stats had keys, rows or previews (the fields a later version added).
    old = {"shard": "shard-00000", "records": 5, "written": 5, "rejected": 0, "seconds": 0.2,
           "data_file": "shard-00000.parquet", "rejects_file": None, "source": "s3://b/x.tar", "size": 10,
           "version": "e1", "some_future_field": 1}
    stats = ShardStats.from_json(old)
    assert (stats.key, stats.rows, stats.preview_rows, stats.retries) == (None, 0, None, 0)
    assert (stats.reject_reasons, stats.metrics) == (None, None)  # not counted then: totals read the rejects file
    assert stats.read == {"source": "s3://b/x.tar", "size": 10, "version": "e1"}
    assert "retries" not in stats.to_json() and "inputs" not in stats.to_json()


def test_provenance_flattens_the_jobs_own_fields_and_matches_on_them():
    from pipeline.core.payloads import Provenance

    provenance = Provenance(
        "edit", "s3://m/e.pt", "ab" * 32, 2, "ffhq_encode", 256, 18, 512, "torch float32", "float32", "float16",
        "0.1.0", "cd" * 32, job_fields={"edit": "direction", "direction_sha256": "ef" * 32},
    )
    record = provenance.to_json(shard="shard-00001")
    assert record["edit"] == "direction" and record["shard"] == "shard-00001" and "job_fields" not in record
    assert "accuracy_gate" not in record  # the reference engine is not gated
    assert provenance.matched == ("job", "checkpoint_sha256", "stages", "spec_sha256", "latent_dtype", "edit", "direction_sha256")
