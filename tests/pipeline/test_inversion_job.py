import json
import os
import signal
import time

import fsspec
import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from helpers import bad_images, make_image_folder
from engines import load_inverter
from operators.images import images_to_tensor
from pipeline.core.decode import decode_image
from pipeline.core.errors import PreflightError
from pipeline.core.job import Work
from pipeline.inversion.job import INVERSION, InversionJob
from pipeline.core.preflight import plan_job
from pipeline.core.schedule import run_plan
from pipeline.core.store import latent_codes
from runs import run_inversion
from pipeline.inversion.spec import InversionSpec


def make_spec(input_uri, checkpoint, output_uri, **sections) -> InversionSpec:
    raw = {
        "input": {"uri": input_uri, "shard_size": 4},
        "model": {"checkpoint": str(checkpoint), "stages": 2},
        "output": {"uri": output_uri, "row_group_size": 3},
        "resources": {"num_actors": 1, "batch_size": 3},
        "max_failure_rate": 0.5,
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return InversionSpec.model_validate(raw)


def read_output(uri, storage_options=None):
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    keys, sources, codes, rejects = [], [], [], []
    for path in sorted(fs.glob(f"{root.rstrip('/')}/shard-*.parquet")):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        keys += table.column("key").to_pylist()
        sources += table.column("source").to_pylist()
        codes.append(latent_codes(table))
    for path in sorted(fs.glob(f"{root.rstrip('/')}/_rejects/*.parquet")):
        with fs.open(path, "rb") as f:
            rejects += pq.read_table(f).column("key").to_pylist()
    return keys, sources, np.concatenate(codes), rejects


def direct_codes(checkpoint, folder, keys):
    inverter = load_inverter(str(checkpoint), stages=2)
    images = np.stack([decode_image((folder / k).read_bytes(), 32, False, False) for k in keys])
    return inverter.invert(images_to_tensor(images)).numpy()


def test_end_to_end_with_bad_records(ray_local, tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    good = make_image_folder(folder, good=11, bad=bad_images())
    out = tmp_path / "out"
    report = run_inversion(make_spec(str(folder), tiny_checkpoint, str(out)), show_progress=False)
    assert (report.records, report.written, report.rejected, report.shards, report.succeeded) == (17, 11, 6, 5, True)
    assert 0 < report.first_commit_seconds <= report.seconds
    assert f", first shard committed after {report.first_commit_seconds:.1f} s" in report.summary().splitlines()[1]
    reasons = {"cannot decode image": 1, "cannot decode image: OSError": 1, "empty file": 1,
               "image is NxN, expected NxN": 1, "image mode is L, expected RGB": 1, "image mode is RGBA, expected RGB": 1}
    assert report.reject_reasons == reasons and report.processed == 17
    assert report.summary().splitlines()[2:9] == ["rejected by reason:", *(f"  1  {reason}" for reason in reasons)]
    committed = [json.loads(p.read_text()) for p in sorted((out / "_stats").glob("*.json"))]
    assert sum(sum(s["reject_reasons"].values()) for s in committed) == 6 and not any("metrics" in s for s in committed)

    keys, sources, codes, rejects = read_output(str(out))
    assert keys == good  # every good record exactly once, in order
    assert sorted(rejects) == sorted(bad_images())  # every bad one exactly once
    assert sources[0] == f"file://{folder}/a/img_000.png"
    np.testing.assert_allclose(codes, direct_codes(tiny_checkpoint, folder, keys), rtol=0, atol=1e-5)

    assert sorted(p.name for p in out.glob("shard-*.parquet")) == [f"shard-{i:05d}.parquet" for i in range(5)]
    meta = pq.ParquetFile(out / "shard-00000.parquet")
    provenance = json.loads(meta.schema_arrow.metadata[b"e2style_batch"])
    assert provenance["stages"] == 2 and provenance["shard"] == "shard-00000"
    assert len(provenance["checkpoint_sha256"]) == 64 and provenance["checkpoint"] == str(tiny_checkpoint)
    column = meta.metadata.row_group(0).column(2)
    assert column.compression == "ZSTD" and "BYTE_STREAM_SPLIT" in column.encodings
    assert [meta.metadata.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 1]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert (manifest["records"], manifest["written"], manifest["rejected"], manifest["shards"]) == (17, 11, 6, 5)
    assert manifest["rejected_by_reason"] == reasons and "metrics" not in manifest
    assert not list((out / "_tmp").glob("*"))


def test_resume_redoes_only_uncommitted_shards(ray_local, tiny_checkpoint, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    good = make_image_folder(folder, good=10)
    spec = make_spec(str(folder), tiny_checkpoint, str(out))
    run_inversion(spec, show_progress=False)
    # A crash between writing shard 1's data and committing it: the data file is there, the stats are not.
    (out / "_stats" / "shard-00001.json").unlink()
    (out / "_manifest.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    report = run_inversion(spec, show_progress=False)
    assert (report.shards_skipped, report.records, report.succeeded) == (2, 10, True)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert after["shard-00000.parquet"] == before["shard-00000.parquet"]
    assert after["shard-00002.parquet"] == before["shard-00002.parquet"]
    assert after["shard-00001.parquet"] != before["shard-00001.parquet"]
    assert read_output(str(out))[0] == good
    # Nothing left to do: a third run reads no input shard.
    assert run_inversion(spec, show_progress=False).shards_skipped == 3


def test_output_of_another_model_is_refused(ray_local, tiny_checkpoint, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=5)
    run_inversion(make_spec(str(folder), tiny_checkpoint, str(out)), show_progress=False)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    one_stage = make_spec(str(folder), tiny_checkpoint, str(out), model={"stages": 1})
    with pytest.raises(PreflightError) as refused:
        plan_job(one_stage, INVERSION)
    assert str(refused.value) == (  # the provenance's stages repeat model.stages: told once
        f"output.uri: {out} holds output that this spec would make differently:\n"
        "  model.stages: 2 there, 1 in this spec\n"
        "rerun with --overwrite to replace it, choose another output.uri, or set these back to resume it"
    )
    changed = make_spec(str(folder), tiny_checkpoint, str(out), input={"resize": True}, output={"latent_dtype": "float16"})
    with pytest.raises(PreflightError) as refused:
        plan_job(changed, INVERSION)
    assert str(refused.value).splitlines()[1:3] == [
        "  input.resize: false there, true in this spec", '  output.latent_dtype: "float32" there, "float16" in this spec'
    ]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files  # refusals wrote nothing

    report = run_inversion(one_stage, overwrite=True, show_progress=False)
    assert report.records == 5 and report.shards_skipped == 0
    assert json.loads((out / "_job.json").read_text())["stages"] == 1


def test_files_arriving_between_runs_become_new_shards(ray_local, tiny_checkpoint, tmp_path):
    from pipeline.core.verify import verify_output

    folder, out = tmp_path / "in", tmp_path / "out"
    first = make_image_folder(folder, good=5)  # shards of 4: [4], [1]
    spec = make_spec(str(folder), tiny_checkpoint, str(out))
    run_inversion(spec, show_progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    # Tonight's files: one sorts between finished ones, one lands in a new folder.
    from helpers import png_bytes

    (folder / "a" / "img_0005.png").write_bytes(png_bytes(50))
    (folder / "c").mkdir()
    (folder / "c" / "new.png").write_bytes(png_bytes(51))
    report = run_inversion(spec, show_progress=False)
    assert (report.shards, report.shards_skipped, report.records, report.written) == (3, 2, 7, 7)
    rate = 2 / report.seconds  # the rate counts the 2 records read now, not the 5 committed before
    assert report.processed == 2 and report.summary().splitlines()[1].startswith(
        f"time {report.seconds:.1f} s, 2 records processed this run ({rate:.1f} records/s)"
    )
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet") if p.name in before} == before
    keys, _, codes, _ = read_output(str(out))
    assert keys == first + ["a/img_0005.png", "c/new.png"]
    np.testing.assert_allclose(codes, direct_codes(tiny_checkpoint, folder, keys), rtol=0, atol=1e-5)
    assert json.loads((out / "_stats" / "shard-00002.json").read_text())["inputs"] == ["a/img_0005.png", "c/new.png"]
    assert verify_output(spec, INVERSION).ok

    # Input deleted after it was inverted (say, by a bucket lifecycle rule): the output is kept.
    (folder / first[0]).unlink()
    report = run_inversion(spec, show_progress=False)
    assert (report.shards_skipped, report.gone, report.written, report.processed) == (3, 1, 7, 0)
    assert report.summary().splitlines()[1] == f"time {report.seconds:.1f} s, no records to process this run"
    assert "1 committed shard read input that is no longer listed; its output is kept" in report.summary()
    verified = verify_output(spec, INVERSION)
    assert verified.ok and "1 committed shard that read input no longer listed: 'shard-00000'" in verified.summary()


def test_a_rewritten_webdataset_shard_is_refused(ray_local, tiny_checkpoint, tmp_path):
    from helpers import png_bytes, write_tar

    tars = tmp_path / "tars"
    tars.mkdir()
    write_tar(tars / "000.tar", [("x/1.png", png_bytes(1))])
    spec = make_spec(str(tars), tiny_checkpoint, str(tmp_path / "out"), input={"format": "webdataset"})
    run_inversion(spec, show_progress=False)
    write_tar(tars / "001.tar", [("y/1.png", png_bytes(2))])  # a new file: a new shard
    assert [s.name for s in plan_job(spec, INVERSION).todo] == ["shard-00001"]
    write_tar(tars / "000.tar", [("x/1.png", png_bytes(1)), ("x/2.png", png_bytes(3))])
    with pytest.raises(PreflightError, match=r"000.tar changed after it was committed as shard-00000 \(10240 bytes, version .* then; 10240 bytes, version .* now\)"):
        plan_job(spec, INVERSION)


def test_too_many_rejects_fail_the_job_but_keep_what_was_written(ray_local, tiny_checkpoint, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=2, bad=bad_images())
    report = run_inversion(make_spec(str(folder), tiny_checkpoint, str(out), max_failure_rate=0.25), show_progress=False)
    assert not report.succeeded and "75.00% > max_failure_rate 25.00%" in report.message
    assert not (out / "_manifest.json").exists()
    keys, _, _, rejects = read_output(str(out))
    assert len(keys) == 2 and len(rejects) == 6


def actor_pids(name: str) -> set[int]:
    return {p.pid for p in psutil.process_iter(["cmdline"]) if f"ray::{name}" in " ".join(p.info["cmdline"] or [])}


@pytest.mark.parametrize("actor", ["InferenceActor", "Writer"])
def test_a_killed_actor_loses_nothing(ray_local, tiny_checkpoint, tmp_path, actor):
    folder, out = tmp_path / "in", tmp_path / "out"
    good = make_image_folder(folder, good=90)
    spec = make_spec(str(folder), tiny_checkpoint, str(out), input={"shard_size": 30}, resources={"batch_size": 1})
    killed = []

    def kill_actor_after_first_commit(stats):
        if not killed:
            for pid in actor_pids(actor):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    plan = plan_job(spec, INVERSION)
    report = run_plan(plan, progress=kill_actor_after_first_commit)
    assert killed, f"no {actor} was running"
    assert (report.records, report.written, report.succeeded) == (90, 90, True)
    keys, _, codes, rejects = read_output(str(out))
    assert keys == good and rejects == []
    np.testing.assert_allclose(codes, direct_codes(tiny_checkpoint, folder, keys), rtol=0, atol=1e-5)


def test_object_storage_end_to_end(ray_local, s3_server, tiny_checkpoint, tmp_path):
    options = {"endpoint_url": s3_server}
    s3 = fsspec.filesystem("s3", **options)
    for bucket in ("faces", "models", "latents"):
        s3.mkdir(bucket)
    folder = tmp_path / "in"
    good = make_image_folder(folder, good=6, bad={"bad/empty.png": b""})
    s3.put(str(folder) + "/", "faces/set1/", recursive=True)
    s3.put(str(tiny_checkpoint), "models/e2style.pt")
    spec = make_spec(
        "s3://faces/set1/", "s3://models/e2style.pt", "s3://latents/run1/",
        input={"storage_options": options}, model={"storage_options": options}, output={"storage_options": options},
    )
    report = run_inversion(spec, show_progress=False)
    assert (report.records, report.written, report.rejected) == (7, 6, 1)
    keys, sources, codes, rejects = read_output("s3://latents/run1/", options)
    assert keys == good and rejects == ["bad/empty.png"]
    assert sources[0] == "s3://faces/set1/a/img_000.png"
    np.testing.assert_allclose(codes, direct_codes(tiny_checkpoint, folder, keys), rtol=0, atol=1e-5)
    assert s3.exists("latents/run1/_manifest.json")


def test_actors_that_would_starve_decoding_are_refused(ray_local, tiny_checkpoint, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=2)
    spec = make_spec(str(folder), tiny_checkpoint, str(out), resources={"num_cpus_per_actor": 2, "decode_cpus": 1})
    with pytest.raises(PreflightError, match=r"need 3 CPU and 0 GPU; the Ray cluster has 2 CPU"):
        run_inversion(spec, show_progress=False)
    assert not out.exists()


def test_webdataset_and_parquet_inputs(ray_local, tiny_checkpoint, tmp_path):
    from helpers import png_bytes, write_image_parquet, write_tar

    tars, parquets = tmp_path / "tars", tmp_path / "parquets"
    tars.mkdir()
    parquets.mkdir()
    write_tar(tars / "000.tar", [("x/1.png", png_bytes(1)), ("x/1.json", b"{}"), ("x/2.png", b"")])
    write_tar(tars / "001.tar", [("x/3.png", png_bytes(3))])
    write_image_parquet(parquets / "a.parquet", [("p1", png_bytes(1)), ("p2", png_bytes(2))], struct=True)
    write_image_parquet(parquets / "b.parquet", [("p3", png_bytes(3)), ("p4", None)])

    report = run_inversion(make_spec(str(tars), tiny_checkpoint, str(tmp_path / "out-wds"), input={"format": "webdataset"}), show_progress=False)
    assert (report.shards, report.records, report.written, report.rejected) == (2, 3, 2, 1)
    keys, sources, codes, rejects = read_output(str(tmp_path / "out-wds"))
    assert keys == ["000.tar/x/1", "001.tar/x/3"] and rejects == ["000.tar/x/2"]
    assert sources == [f"file://{tars}/000.tar#x/1.png", f"file://{tars}/001.tar#x/3.png"]

    spec = make_spec(str(parquets), tiny_checkpoint, str(tmp_path / "out-pq"), input={"format": "parquet", "key_column": "key"})
    report = run_inversion(spec, show_progress=False)
    assert (report.shards, report.records, report.written, report.rejected) == (2, 4, 3, 1)
    keys, _, pq_codes, rejects = read_output(str(tmp_path / "out-pq"))
    assert keys == ["p1", "p2", "p3"] and rejects == ["p4"]
    # The same image gives the same code whichever container it came in.
    np.testing.assert_allclose(pq_codes[0], codes[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(pq_codes[2], codes[1], rtol=0, atol=1e-5)

    missing = make_spec(str(parquets), tiny_checkpoint, str(tmp_path / "out-x"), input={"format": "parquet", "image_column": "jpeg"})
    with pytest.raises(PreflightError, match=r"a.parquet has no column 'jpeg' \(input.image_column\); its columns: key, image"):
        plan_job(missing, INVERSION)


def test_an_onnxruntime_engine_built_once_and_gated(ray_local, tiny_checkpoint, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    good = make_image_folder(folder, good=5)
    report = run_inversion(make_spec(str(folder), tiny_checkpoint, str(out), engine={"backend": "onnxruntime"}), show_progress=False)
    assert report.written == 5
    keys, _, codes, _ = read_output(str(out))
    assert keys == good
    np.testing.assert_allclose(codes, direct_codes(tiny_checkpoint, folder, keys), rtol=0, atol=2e-5)
    provenance = json.loads(pq.ParquetFile(out / "shard-00000.parquet").schema_arrow.metadata[b"e2style_batch"])
    assert provenance["engine"] == "onnxruntime float32"
    assert provenance["accuracy_gate"].startswith("onnxruntime float32 passed the accuracy gate: stage 1: W+ max error")
    kinds = sorted(json.loads(meta.read_text())["fields"]["kind"] for meta in (out / "_engines").glob("*.json"))
    assert kinds == ["gate", "onnx", "onnx", "onnx"]  # stage 1, stage 2, synthesis: exported once; the verdict

    strict = make_spec(str(folder), tiny_checkpoint, str(tmp_path / "out2"),
                       engine={"precision": "bfloat16", "gate": {"max_wplus_error": 1e-7}})
    with pytest.raises(PreflightError, match=r"engine: torch bfloat16 FAILED the accuracy gate: stage 1: W\+ max error"):
        run_inversion(strict, show_progress=False)
    assert not list((tmp_path / "out2").glob("shard-*")) and not (tmp_path / "out2" / "_job.json").exists()


def test_an_engine_that_cannot_be_built_stops_the_job_before_any_work(ray_local, tiny_checkpoint, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=2)
    spec = make_spec(str(folder), tiny_checkpoint, str(out), engine={"backend": "tensorrt"})  # no GPU here
    with pytest.raises(PreflightError, match="engine: could not build the tensorrt float32 engine: ValueError: the tensorrt backend needs a CUDA device"):
        run_inversion(spec, show_progress=False)
    assert not list(out.glob("shard-*"))


class FailingPrepare:
    """Decodes like the inversion job, but fails on one shard: permanently, or transiently (a dropped
    connection) the first ``transient`` times, counted in files since each try may run in another worker."""

    def __init__(self, decode, fail_shard: str, counter_dir: str, transient: int | None):
        self.decode, self.fail_shard, self.counter_dir, self.transient = decode, fail_shard, counter_dir, transient

    def __call__(self, shard, only):
        if shard.name == self.fail_shard:
            tries = len(os.listdir(self.counter_dir))
            open(os.path.join(self.counter_dir, str(tries)), "w").close()
            if self.transient is None:
                raise ValueError("this shard's container is corrupt")
            if tries < self.transient:
                raise ConnectionResetError("connection reset by peer")
        return self.decode(shard, only)


class FlakyInversion(InversionJob):
    def __init__(self, fail_shard: str, counter_dir: str, transient: int | None):
        self.args = (fail_shard, counter_dir, transient)

    def work(self, plan):
        work = super().work(plan)
        return Work(FailingPrepare(work.prepare, *self.args), work.model, work.write)


class CountingModel:
    """The job's model step, leaving a file per call that names the process and the records it ran."""

    def __init__(self, model, calls_dir: str):
        self.model, self.calls_dir = model, calls_dir

    def __call__(self, engine, images, batch_size):
        with open(os.path.join(self.calls_dir, f"{os.getpid()}-{time.monotonic_ns()}"), "w") as f:
            f.write(str(len(images)))
        return self.model(engine, images, batch_size)


class CountedInversion(InversionJob):
    def __init__(self, calls_dir: str):
        self.calls_dir = calls_dir

    def work(self, plan):
        work = super().work(plan)
        return Work(work.prepare, CountingModel(work.model, self.calls_dir), work.write, work.part, work.join)


@pytest.fixture
def by_value():
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this module
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_transient_storage_error_in_a_task_is_retried(ray_local, tiny_checkpoint, tmp_path, by_value):
    folder, out = tmp_path / "in", tmp_path / "out"
    good = make_image_folder(folder, good=6)
    (tmp_path / "tries").mkdir()
    spec = make_spec(str(folder), tiny_checkpoint, str(out))
    plan = plan_job(spec, FlakyInversion("shard-00001", str(tmp_path / "tries"), transient=2))
    report = run_plan(plan)
    assert (report.records, report.written, report.succeeded) == (6, 6, True)
    assert len(os.listdir(tmp_path / "tries")) == 3  # two hiccups, then the try that worked
    assert read_output(str(out))[0] == good


def test_a_failed_step_is_named_and_the_actors_are_ended(ray_local, tiny_checkpoint, tmp_path, by_value):
    import ray

    from pipeline.core.errors import JobFailed

    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=6)
    (tmp_path / "tries").mkdir()
    spec = make_spec(str(folder), tiny_checkpoint, str(out))
    plan = plan_job(spec, FlakyInversion("shard-00001", str(tmp_path / "tries"), transient=None))
    with pytest.raises(JobFailed, match=r"shard-00001 \(from b/img_003.png\) could not be read and prepared: "
                                        r"ValueError: this shard's container is corrupt"):
        run_plan(plan)
    assert len(os.listdir(tmp_path / "tries")) == 1  # not a storage hiccup: not tried again
    def everything_ended():
        cpus_back = ray.available_resources().get("CPU") == ray.cluster_resources().get("CPU")
        return not actor_pids("InferenceActor") and not actor_pids("Writer") and cpus_back

    deadline = time.time() + 30
    while not everything_ended() and time.time() < deadline:
        time.sleep(0.2)
    assert everything_ended()


def test_preflight_reads_the_checkpoint_once_for_the_model_and_its_hash(tiny_checkpoint, tmp_path, monkeypatch):
    import fsspec

    import engines.checkpoints as checkpoints
    from engines import checkpoint_sha256

    folder = tmp_path / "in"
    make_image_folder(folder, good=2)
    opened = []
    real_open = fsspec.open
    monkeypatch.setattr(checkpoints.fsspec, "open", lambda uri, *a, **k: opened.append(uri) or real_open(uri, *a, **k))
    plan = plan_job(make_spec(str(folder), tiny_checkpoint, str(tmp_path / "out")), INVERSION)
    assert opened == [str(tiny_checkpoint)]
    assert plan.provenance.checkpoint_sha256 == checkpoint_sha256(str(tiny_checkpoint))


def test_the_last_shard_is_spread_over_the_actors_and_committed_as_one_file(ray_local, tiny_checkpoint, tmp_path, by_value):
    folder, calls = tmp_path / "in", tmp_path / "calls"
    good = make_image_folder(folder, good=10)
    calls.mkdir()
    two_actors = {"num_actors": 2, "num_cpus_per_actor": 0.5, "decode_cpus": 0.5, "batch_size": 2}
    spec = make_spec(str(folder), tiny_checkpoint, str(tmp_path / "out"), input={"shard_size": 10}, resources=two_actors)
    report = run_plan(plan_job(spec, CountedInversion(str(calls))))
    assert (report.records, report.written, report.shards) == (10, 10, 1)

    # 5 batches in 2 parts, cut between batches: 2 batches on one actor, 3 on the other.
    ran = sorted((name.split("-")[0], int((calls / name).read_text())) for name in os.listdir(calls))
    assert sorted(n for _, n in ran) == [4, 6] and len({pid for pid, _ in ran}) == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("*.parquet")) == ["shard-00000.parquet"]
    keys, _, codes, _ = read_output(str(tmp_path / "out"))
    assert keys == good  # the parts joined in order
    np.testing.assert_allclose(codes, direct_codes(tiny_checkpoint, folder, keys), rtol=0, atol=1e-5)


def test_parts_of_a_payload_run_whole_batches_and_join_to_the_whole():
    from pipeline.core.payloads import join_rows, part_of_rows

    rows = np.arange(11)
    assert [part_of_rows(rows, i, 3, 2).tolist() for i in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert [len(part_of_rows(rows, i, 8, 4)) for i in range(8)] == [0, 0, 4, 0, 0, 4, 0, 3]
    for parts in range(1, 7):
        assert join_rows([part_of_rows(rows, i, parts, 3) for i in range(parts)]).tolist() == rows.tolist()


def test_actors_started_beside_the_gate_are_replaced_when_a_fallback_passes(ray_local, tiny_checkpoint, tmp_path, by_value):
    folder, calls, out = tmp_path / "in", tmp_path / "calls", tmp_path / "out"
    good = make_image_folder(folder, good=8)
    calls.mkdir()
    two_actors = {"num_actors": 2, "num_cpus_per_actor": 0.5, "decode_cpus": 0.5, "batch_size": 2}
    bfloat16_first = {"precision": "bfloat16", "fallback": ["float32"], "gate": {"max_wplus_error": 1e-5}}
    spec = make_spec(str(folder), tiny_checkpoint, str(out), input={"shard_size": 8}, resources=two_actors, engine=bfloat16_first)
    report = run_plan(plan_job(spec, CountedInversion(str(calls))))
    assert report.written == 8
    assert len({name.split("-")[0] for name in os.listdir(calls)}) == 2  # both actors ran a part
    provenance = json.loads(pq.ParquetFile(out / "shard-00000.parquet").schema_arrow.metadata[b"e2style_batch"])
    assert provenance["engine"] == "torch float32"
    keys, _, codes, _ = read_output(str(out))
    assert keys == good  # float32 codes from both actors: the bfloat16 one started beside the gate never ran
    np.testing.assert_allclose(codes, direct_codes(tiny_checkpoint, folder, keys), rtol=0, atol=1e-5)
