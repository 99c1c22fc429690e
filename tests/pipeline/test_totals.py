"""What a job's shards add up to: rejects by reason and metric statistics, in the stats, the manifest and
the summary; and how a run's report reads."""

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core.payloads import ShardStats
from pipeline.core.report import JobReport, counted
from pipeline.core.store import OutputStore, manifest_table
from pipeline.core.totals import count_reasons, metrics_total, reasons_total, reject_reason


@pytest.mark.parametrize("error, reason", [
    ("cannot decode image: OSError: image file is truncated (3 bytes not processed)", "cannot decode image: OSError"),
    ("cannot decode image: not a readable JPEG, PNG file", "cannot decode image"),
    ("cannot read file: FileNotFoundError: [Errno 2] No such file or directory: '/in/a.png'",
     "cannot read file: FileNotFoundError"),
    ("empty file (0 bytes)", "empty file"),
    ("image is 96x80, expected 64x64 (set input.resize to resize)", "image is NxN, expected NxN"),
    ("image mode is L, expected RGB (set input.convert_to_rgb to convert)", "image mode is L, expected RGB"),
    ("image mode is I with values outside 0..65535; only 8 and 16 bit are read", "image mode is I with values outside N..N"),
    ("label map holds label 19, outside 0..18", "label map holds label N, outside N..N"),
    ("record 'b.png', which this edit pairs it with, was rejected: empty file (0 bytes)",
     "record '...', which this edit pairs it with, was rejected"),
    ("key 'x:3' repeats the key of row 3", "key '...' repeats the key of row N"),
    ("tar file unreadable after 5 samples: ReadError: unexpected end of data", "tar file unreadable after N samples: ReadError"),
    ("output name 'a.s+1.png' is taken by another row of the same key and variant",
     "output name '...' is taken by another row of the same key and variant"),
    ("cannot read: ClientError: http://h/x.png?X-Amz-Signature=secret denied", "cannot read: ClientError"),
    ("float16 values only", "float16 values only"),  # digits inside a word stay
    ("", "(no reason given)"),
])
def test_reject_reasons_are_the_first_clause_with_names_and_numbers_replaced(error, reason):
    assert reject_reason(error) == reason


def test_a_long_reason_is_cut_and_secrets_never_reach_it():
    assert reject_reason("x" * 300) == "x" * 97 + "..."
    assert "secret" not in reject_reason("https://h/x?token=secret is unreadable")


def test_reasons_count_most_frequent_first_and_add_up_over_shards_old_ones_from_their_rejects_file():
    assert list(count_reasons(["empty file (0 bytes)", "b: OSError: x", "empty file (0 bytes)", "a"]).items()) == [
        ("empty file", 2), ("a", 1), ("b: OSError", 1)
    ]
    new = ShardStats("shard-00000", 5, 3, 2, "shard-00000.parquet", reject_reasons={"empty file": 2})
    old = ShardStats("shard-00001", 4, 1, 3, "shard-00001.parquet", "_rejects/shard-00001.parquet")  # an older version's
    clean = ShardStats("shard-00002", 2, 2, 0, "shard-00002.parquet")
    files = {"shard-00001": [("a", "s", "empty file (0 bytes)"), ("b", "s", "image is 9x9, expected 8x8"),
                             ("c", "s", "image is 7x7, expected 8x8")]}
    read = []
    total = reasons_total([new, old, clean], lambda shard: read.append(shard) or files[shard])
    assert total == {"empty file": 3, "image is NxN, expected NxN": 2} and read == ["shard-00001"]


def test_metric_totals_equal_numpy_over_every_shards_rows_and_leave_out_infinite_values():
    rng = np.random.default_rng(3)
    parts = [rng.normal(25, 3, n).tolist() for n in (7, 1, 12)]
    parts[1].append(float("inf"))  # the PSNR of an exact reconstruction
    stats = [ShardStats(f"shard-{i:05d}", len(p), len(p), 0, "x", metrics={"psnr": p, "ssim": [0.5] * len(p)})
             for i, p in enumerate(parts)]
    stats.append(ShardStats("shard-00003", 1, 1, 0, "x"))  # a job that does not evaluate records none
    totals = metrics_total([ShardStats.from_json(json.loads(json.dumps(s.to_json()))) for s in stats])
    values = np.array([v for p in parts for v in p if np.isfinite(v)])
    assert totals["psnr"] == {
        "count": 20, "mean": float(np.mean(values)), "std": float(np.std(values)), "median": float(np.median(values)),
        "p5": float(np.percentile(values, 5)), "p95": float(np.percentile(values, 95)), "not_finite": 1,
    }
    assert totals["ssim"] == {"count": 21, "mean": 0.5, "std": 0.0, "median": 0.5, "p5": 0.5, "p95": 0.5}
    assert metrics_total(stats[3:]) == {}


def image_rows(keys, psnr):
    codes = np.zeros((len(keys), 2, 4), np.float32)
    columns = {"image": ([f"{k}.png" for k in keys], pa.string()), "psnr": (psnr, pa.float64())}
    return manifest_table(keys, [f"file:///{k}" for k in keys], codes, {"job": "restore"}, "float32", columns)


def test_stats_and_manifest_hold_rejects_by_reason_and_metrics_also_for_shards_of_older_versions(tmp_path):
    store = OutputStore(str(tmp_path / "out"), {})
    rejects = [("c", "file:///c", "empty file (0 bytes)"), ("d", "file:///d", "cannot decode image: OSError: truncated"),
               ("e", "file:///e", "empty file (0 bytes)")]
    first = store.write_shard("shard-00000", image_rows(["a", "b"], [20.5, 31.25]), rejects, 10, 0.0,
                              {"inputs": list("abcde")}, metrics=("psnr",))
    assert first.reject_reasons == {"empty file": 2, "cannot decode image: OSError": 1}
    assert first.metrics == {"psnr": [20.5, 31.25]}
    assert store.committed()["shard-00000"] == first  # as read back
    second = store.write_shard("shard-00001", image_rows(["f", "h"], [40.0, float("inf")]),
                               [("g", "file:///g", "empty file (0 bytes)")], 10, 0.0, {"inputs": ["f", "g", "h"]},
                               metrics=("psnr",))
    assert second.metrics == {"psnr": [40.0, None]}  # JSON has no infinity: null, counted apart
    # The second shard as a version before these totals wrote its stats.
    record = json.loads((tmp_path / "out" / "_stats" / "shard-00001.json").read_text())
    del record["reject_reasons"], record["metrics"]
    legacy = ShardStats.from_json(record)
    assert (legacy.reject_reasons, legacy.metrics) == (None, None)
    store.write_manifest({"job": "restore"}, [first, legacy])
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["rejected_by_reason"] == {"cannot decode image: OSError": 1, "empty file": 3}
    values = np.array([20.5, 31.25])  # the older shard recorded no metric values: only the first's count
    assert manifest["metrics"] == {"psnr": {"count": 2, "mean": 25.875, "std": 5.375, "median": 25.875,
                                            "p5": float(np.percentile(values, 5)), "p95": float(np.percentile(values, 95))}}
    store.write_manifest({"job": "restore"}, [first, second])
    psnr = json.loads((tmp_path / "out" / "_manifest.json").read_text())["metrics"]["psnr"]
    assert (psnr["count"], psnr["not_finite"], psnr["mean"]) == (3, 1, float(np.mean([20.5, 31.25, 40.0])))
    # A retry recounts the shard's reasons (e, not retried, keeps its own) and keeps every row's metric.
    retried = store.retry_rejects("shard-00000", image_rows(["c"], [22.0]), [("d", "file:///d", "still truncated")],
                                  10, 0.0, metrics=("psnr",))
    assert retried.reject_reasons == {"empty file": 1, "still truncated": 1} and retried.rejected == 2
    assert retried.metrics == {"psnr": [20.5, 31.25, 22.0]} and store.committed()["shard-00000"] == retried


def test_counted_nouns_take_their_number():
    assert [counted(n, "shard") for n in (0, 1, 2)] == ["0 shards", "1 shard", "2 shards"]
    assert counted(1, "entry", "entries") == "1 entry" and counted(3, "entry", "entries") == "3 entries"


def report(**fields):
    base = dict(output="/out", shards=1, shards_skipped=0, records=1, written=1, rejected=0, seconds=2.0,
                failure_rate=0.0, succeeded=True)
    return JobReport(**{**base, **fields})


def test_summary_counts_the_rate_over_this_runs_records_in_the_right_number():
    assert report(processed=1).summary().splitlines() == [
        "succeeded: 1 of 1 record inverted, 0 rejected (0.00%), 1 shard (0 already committed)",
        "time 2.0 s, 1 record processed this run (0.5 records/s)",
        "output: /out",
    ]
    # A rerun over committed shards processed nothing: no rate from records read by earlier runs.
    done = report(shards=2, shards_skipped=2, records=3, written=3, seconds=0.01, processed=0, gone=1, verb="restored")
    assert done.summary().splitlines() == [
        "succeeded: 3 of 3 records restored, 0 rejected (0.00%), 2 shards (2 already committed)",
        "time 0.0 s, no records to process this run",
        "output: /out",
        "1 committed shard read input that is no longer listed; its output is kept",
    ]
    two_gone = report(gone=2, retried=1, recovered=1, processed=1).summary().splitlines()
    assert "retried 1 rejected record: 1 recovered, 0 still rejected" in two_gone
    assert "2 committed shards read input that is no longer listed; their output is kept" in two_gone


def test_summary_lists_rejects_by_reason_and_metric_statistics():
    reasons = {f"reason {i:02d}": 1 for i in range(12)} | {"empty file": 30}
    metrics = {"psnr": {"count": 40, "mean": 24.3127, "std": 1.20349, "median": 24.4, "p5": 22.1, "p95": 26.0,
                        "not_finite": 1},
               "ssim": {"count": 0}}
    lines = report(records=72, written=30, rejected=42, failure_rate=42 / 72, processed=72, reject_reasons=reasons,
                   metrics=metrics, shards=3, verb="restored").summary().splitlines()
    assert lines[0] == "succeeded: 30 of 72 records restored, 42 rejected (58.33%), 3 shards (0 already committed)"
    assert lines[2:16] == [
        "rejected by reason:",
        "  30  empty file",
        *[f"   1  reason {i:02d}" for i in range(9)],
        "  3 more rejects for 3 other reasons (all in _manifest.json)",
        "psnr over 40 images: mean 24.31, std 1.203, median 24.4, p5 22.1, p95 26 (1 value not finite, left out)",
        "ssim over 0 images",
    ]
