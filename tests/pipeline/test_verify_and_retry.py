import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import bad_images, make_image_folder, png_bytes, write_tar
from pipeline.core.decode import read_and_decode
from runs import run_inversion
from pipeline.core.shards import list_shards
from pipeline.core.store import OutputStore, latent_codes, latent_table
from pipeline.core.verify import VerifyError, verify_output
from pipeline.inversion.job import INVERSION
from test_inversion_job import direct_codes, make_spec, read_output


@pytest.fixture()
def inverted(ray_local, tiny_checkpoint, tmp_path):
    """A committed output of 11 good and 6 bad images in 5 shards of 4 (the bad ones sort last)."""
    folder, out = tmp_path / "in", tmp_path / "out"
    good = make_image_folder(folder, good=11, bad=bad_images())
    spec = make_spec(str(folder), tiny_checkpoint, str(out))
    report = run_inversion(spec, show_progress=False)
    assert (report.written, report.rejected) == (11, 6)
    return spec, folder, out, good


def rewrite(path, change):
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def test_a_complete_output_verifies(inverted):
    spec, _, out, _ = inverted
    report = verify_output(spec, INVERSION)
    assert report.ok, report.summary()
    assert report.summary() == (
        f"verified: 5 shards, 17 input records; output {out} holds 11 latents and 6 rejects; "
        "every input record is there exactly once"
    )
    assert [(c.records, c.written, c.rejected) for c in report.shards] == [(4, 4, 0), (4, 4, 0), (4, 3, 1), (4, 0, 4), (1, 0, 1)]


def test_verify_names_every_difference(inverted):
    spec, folder, out, good = inverted
    # shard 1: a latent row lost, and a NaN in another
    def drop_first_and_poison(table):
        codes = latent_codes(table)[1:].copy()
        codes[0, 3, 5] = np.nan
        keys = table.column("key")[1:].to_pylist()
        latents = latent_table(keys, keys, codes, {}, "float32").column("w_plus")
        return pa.Table.from_arrays([table.column("key")[1:], table.column("source")[1:], latents], schema=table.schema)

    rewrite(out / "shard-00001.parquet", drop_first_and_poison)
    rewrite(out / "shard-00001.parquet", lambda t: pa.concat_tables([t, t.slice(t.num_rows - 1, 1)]))  # a row twice
    # shard 3: a rejected record listed twice in the rejects
    rewrite(out / "_rejects" / "shard-00003.parquet", lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    # shard 2: never committed; shard 4: its data file gone
    (out / "_stats" / "shard-00002.json").unlink()
    (out / "shard-00004.parquet").unlink()
    # a data file of no input shard, as an interrupted run leaves it (recorded as the job's), and a file
    # of the user's named like one, which is only noted
    (out / "shard-00009.parquet").write_bytes((out / "shard-00000.parquet").read_bytes())
    (out / "_files" / "shard-00009.json").write_text('{"shard": "shard-00009", "files": ["shard-00009.parquet"]}')
    (out / "shard-00010.parquet").write_bytes(b"the user's")

    report = verify_output(spec, INVERSION)
    assert not report.ok
    problems = {c.shard: c.problems for c in report.shards}
    assert problems["shard-00000"] == []
    assert problems["shard-00001"] == [
        f"1 latent not finite: {good[5]!r}",
        f"1 record with another number of rows than the job makes: {good[7]!r} ({good[7]!r} has 2, expected 1)",
        f"1 record missing from the output and the rejects: {good[4]!r}",
        "stats say 4 written and 0 rejected, the files hold 3 and 0",
    ]
    assert problems["shard-00003"] == [
        "1 record more than once in the rejects: 'bad/corrupt.png'",
        "stats say 0 written and 4 rejected, the files hold 0 and 5",
    ]
    assert problems["shard-00002"] == [
        "not committed (a data file without stats: a run was interrupted): 4 input records missing; run the job again"
    ]
    assert len(problems["shard-00004"]) == 1 and problems["shard-00004"][0].startswith("cannot read its output: FileNotFoundError")
    assert report.problems == ["1 data file for shards the input does not have: 'shard-00009.parquet'"]
    assert "1 file named like data files that the job did not write: 'shard-00010.parquet'" in report.notes
    assert report.summary().startswith("verification FAILED: 5 shards, 17 input records;")
    assert "; 9 differences:\n" in report.summary()


def test_verify_refuses_output_of_another_spec(inverted, tmp_path):
    spec, _, _, _ = inverted
    with pytest.raises(VerifyError, match='written from a different spec:\n  output.latent_dtype: "float32" there, "float16" in this spec$'):
        verify_output(spec.model_copy(update={"output": spec.output.model_copy(update={"latent_dtype": "float16"})}), INVERSION)
    with pytest.raises(VerifyError, match=r"holds no inversion output \(no _job.json\)"):
        verify_output(spec.model_copy(update={"output": spec.output.model_copy(update={"uri": str(tmp_path / "x")})}), INVERSION)


def test_verify_reads_keys_inside_webdataset_shards(ray_local, tiny_checkpoint, tmp_path):
    tars = tmp_path / "tars"
    tars.mkdir()
    write_tar(tars / "000.tar", [("x/1.png", png_bytes(1)), ("x/2.png", b""), ("x/3.png", png_bytes(3))])
    spec = make_spec(str(tars), tiny_checkpoint, str(tmp_path / "out"), input={"format": "webdataset"})
    run_inversion(spec, show_progress=False)
    assert verify_output(spec, INVERSION).ok
    rewrite(tmp_path / "out" / "shard-00000.parquet", lambda t: t.slice(0, 1))
    check = verify_output(spec, INVERSION).shards[0]
    assert check.problems[0] == "1 record missing from the output and the rejects: '000.tar/x/3'"


def test_decoding_only_named_records(tmp_path):
    make_image_folder(tmp_path, good=4, bad={"bad/empty.png": b""})
    shard = list_shards(str(tmp_path), "images", 10, {})[0]
    decoded = read_and_decode(shard, 32, False, False, {}, only=frozenset({"a/img_002.png", "bad/empty.png"}))
    assert decoded.keys == ["a/img_002.png"] and [r[0] for r in decoded.rejects] == ["bad/empty.png"]
    assert read_and_decode(shard, 32, False, False, {}, only=frozenset()).images.shape == (0, 32, 32, 3)
    write_tar(tmp_path / "s.tar", [("x/1.png", png_bytes(1)), ("x/2.png", png_bytes(2))])
    tar_shard = list_shards(str(tmp_path / "s.tar"), "webdataset", 1, {})[0]
    assert read_and_decode(tar_shard, 32, False, False, {}, only=frozenset({"s.tar/x/2"})).keys == ["s.tar/x/2"]


def test_retry_rejects_recovers_fixed_files_and_touches_nothing_else(inverted, tiny_checkpoint):
    spec, folder, out, good = inverted
    # The user repairs two of the six bad files (same names); the other four stay bad.
    (folder / "bad/empty.png").write_bytes(png_bytes(40))
    (folder / "bad/truncated.png").write_bytes(png_bytes(41))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}

    report = run_inversion(spec, show_progress=False, retry_rejects=True)
    assert (report.retried, report.recovered, report.records, report.written, report.rejected) == (6, 2, 17, 13, 4)
    assert "retried 6 rejected records: 2 recovered, 4 still rejected" in report.summary()
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert {n for n in before if before[n] != after[n]} == {f"shard-0000{i}.parquet" for i in (2, 3, 4)}

    keys, _, codes, rejects = read_output(str(out))
    assert sorted(keys) == sorted(good + ["bad/empty.png", "bad/truncated.png"])
    assert sorted(rejects) == ["bad/big.png", "bad/corrupt.png", "bad/grey.png", "bad/rgba.png"]
    np.testing.assert_allclose(codes, direct_codes(tiny_checkpoint, folder, keys), rtol=0, atol=1e-5)
    stats = OutputStore(str(out), {}).committed()
    assert (stats["shard-00003"].written, stats["shard-00003"].rejected, stats["shard-00003"].retries) == (1, 3, 1)
    assert "retries" not in json.loads((out / "_stats" / "shard-00001.json").read_text())
    assert json.loads((out / "_manifest.json").read_text())["written"] == 13
    assert verify_output(spec, INVERSION).ok

    again = run_inversion(spec, show_progress=False, retry_rejects=True)
    assert (again.retried, again.recovered, again.written) == (4, 0, 13)
    assert sorted(read_output(str(out))[3]) == sorted(rejects)


def test_a_retry_that_dies_mid_commit_leaves_the_shard_to_be_redone(inverted, monkeypatch):
    spec, folder, out, good = inverted
    (folder / "bad/empty.png").write_bytes(png_bytes(40))
    store = OutputStore(str(out), {})

    def crash(*args, **kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(OutputStore, "write_shard", crash)
    with pytest.raises(OSError, match="connection reset"):
        store.retry_rejects("shard-00003", latent_table([], [], np.zeros((0, 10, 32), np.float32), {}, "float32"), [], 3, 0.0)
    monkeypatch.undo()
    assert "shard-00003" not in store.committed()  # uncommitted, not half-updated
    assert verify_output(spec, INVERSION).shards[3].problems[0].startswith("not committed")

    report = run_inversion(spec, show_progress=False)  # a plain rerun redoes the shard whole
    assert (report.shards_skipped, report.written, report.rejected) == (4, 12, 5)
    assert verify_output(spec, INVERSION).ok
