import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from helpers import S3_ENV, kill_process_tree, make_image_folder
from factories import make_e2style, write_official
from helpers import png_bytes
from jobs.invert_dataset import EXIT_BAD_SPEC, EXIT_FAILED, EXIT_OK, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_official(make_e2style(stages=2, seed=51), tmp_path_factory.mktemp("model") / "e2style.pt")


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def base_spec(tmp_path, checkpoint) -> dict:
    make_image_folder(tmp_path / "in", good=3)
    return {
        "input": {"uri": str(tmp_path / "in"), "shard_size": 2},
        "model": {"checkpoint": str(checkpoint), "stages": 2},
        "output": {"uri": str(tmp_path / "out")},
    }


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda s: s["input"].update(uri_typo="x"), r"input\.uri_typo: Extra inputs are not permitted"),
        (lambda s: s["model"].update(stages="two"), r"model\.stages: Input should be a valid integer"),
        (lambda s: s.pop("output"), r"output: Field required"),
        (lambda s: s["input"].update(format="tfrecord"), r"input\.format: Input should be 'images'"),
        (lambda s: s["model"].update(checkpoint="/nowhere/e2style.pt"), r"model\.checkpoint: checkpoint /nowhere/e2style\.pt does not exist"),
        (lambda s: s["model"].update(stages=3), r"model\.checkpoint: checkpoint .* holds 2 stage\(s\).*asked for 3"),
        (lambda s: s["input"].update(uri="/nowhere/faces"), r"input\.uri: input /nowhere/faces does not exist"),
        (lambda s: s.update(engine={"backend": "tvm"}), r"engine\.backend: Input should be 'torch', 'onnxruntime', 'tensorrt' or 'aoti'"),
        (lambda s: s.update(engine={"backend": "onnxruntime", "precision": "float16"}), r"engine: Value error, onnxruntime runs float32 only"),
        (lambda s: s.update(engine={"cuda_graphs": True}), r"engine: Value error, cuda_graphs needs compile: true"),
    ],
)
def test_bad_specs_exit_2_before_any_work(tmp_path, checkpoint, capsys, change, message):
    spec = base_spec(tmp_path, checkpoint)
    change(spec)
    code = main([str(write_spec(tmp_path / "spec.yaml", spec)), "--no-progress"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_SPEC
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_not_yaml_and_unreachable_bucket(tmp_path, checkpoint, capsys, s3_server):
    (tmp_path / "broken.yaml").write_text("input: [unclosed")
    assert main([str(tmp_path / "broken.yaml")]) == EXIT_BAD_SPEC
    assert f"spec {tmp_path / 'broken.yaml'} is not valid YAML" in capsys.readouterr().err
    spec = base_spec(tmp_path, checkpoint)
    spec["output"] = {"uri": "s3://no-such-bucket/latents/", "storage_options": {"endpoint_url": s3_server}}
    assert main([str(write_spec(tmp_path / "spec.yaml", spec))]) == EXIT_BAD_SPEC
    err = capsys.readouterr().err
    assert "output.uri: cannot use s3://no-such-bucket/latents/: bucket 'no-such-bucket' does not exist" in err


def test_success_prints_a_summary(ray_local, tmp_path, checkpoint, capsys):
    spec = write_spec(tmp_path / "spec.yaml", base_spec(tmp_path, checkpoint))
    assert main([str(spec), "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "succeeded: 3 of 3 records inverted, 0 rejected (0.00%), 2 shards (0 already committed)" in out
    assert f"output: {tmp_path / 'out'}" in out


def test_verify_and_retry_rejects_from_the_command_line(ray_local, tmp_path, checkpoint, capsys):
    spec = base_spec(tmp_path, checkpoint)
    spec["max_failure_rate"] = 0.5
    (tmp_path / "in" / "late.png").write_bytes(b"")  # still being uploaded when the job ran
    path = write_spec(tmp_path / "spec.yaml", spec)
    assert main([str(path), "--no-progress"]) == EXIT_OK
    assert main([str(path), "--verify"]) == EXIT_OK
    assert "every input record is there exactly once" in capsys.readouterr().out

    (tmp_path / "out" / "_stats" / "shard-00000.json").unlink()
    assert main([str(path), "--verify"]) == EXIT_FAILED
    assert "shard-00000: not committed (a data file without stats" in capsys.readouterr().out

    (tmp_path / "in" / "late.png").write_bytes(png_bytes(7))
    assert main([str(path), "--retry-rejects", "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "succeeded: 4 of 4 records inverted, 0 rejected" in out
    assert "retried 1 rejected record: 1 recovered, 0 still rejected" in out
    assert main([str(path), "--verify"]) == EXIT_OK

    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--verify", "--overwrite"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def run_job(spec: Path) -> subprocess.Popen:
    env = {**os.environ, **S3_ENV, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.invert_dataset", str(spec), "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def test_driver_killed_mid_run_then_rerun(tmp_path, checkpoint):
    spec = base_spec(tmp_path, checkpoint)
    make_image_folder(tmp_path / "in", good=120)
    spec["input"]["shard_size"] = 6  # 20 shards: enough that the kill below lands mid-run
    spec["resources"] = {"batch_size": 1}
    path = write_spec(tmp_path / "spec.yaml", spec)
    stats = tmp_path / "out" / "_stats"
    job = run_job(path)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(stats.glob("*.json"))) < 2 and job.poll() is None:
        time.sleep(0.05)
    # Ray's workers leave the driver's process group, so kill the whole tree: a worker that outlived the
    # count below could still commit a shard.
    kill_process_tree(job)
    committed = len(list(stats.glob("*.json")))
    assert 2 <= committed < 20, f"{committed} shards committed before the kill"

    rerun = run_job(path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"({committed} already committed)" in out
    keys = []
    for shard in sorted((tmp_path / "out").glob("shard-*.parquet")):
        keys += pq.read_table(shard).column("key").to_pylist()
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == 120
    assert main([str(path), "--verify"]) == EXIT_OK
