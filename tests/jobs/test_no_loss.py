"""Faults an adversarial run found, injected end to end: after each, nothing the user had is lost, no
record is written twice (``--verify`` agrees), nothing secret is written, and the user is told what
happened in one line."""

import hashlib
import http.server
import json
import re
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import make_image_folder, png_bytes, write_image_parquet, write_tar
from factories import make_e2style, write_official
from jobs import edit, invert_dataset
from jobs.cli import EXIT_BAD_SPEC, EXIT_FAILED, EXIT_OK
from pipeline.core.lock import RunLock
from pipeline.core.storage import filesystem


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_official(make_e2style(stages=1, seed=71), tmp_path_factory.mktemp("model") / "e2style.pt")


def spec_file(path: Path, input_uri, output_uri, checkpoint, **sections) -> Path:
    spec = {
        "input": {"uri": input_uri, "shard_size": 2},
        "model": {"checkpoint": str(checkpoint)},
        "output": {"uri": output_uri},
        "resources": {"batch_size": 2},
        "max_failure_rate": 0.5,
    }
    for section, values in sections.items():
        spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(spec))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(main, path: Path, *flags: str) -> int:
    return main([str(path), "--no-progress", *flags])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "output",
    ["{d}", "{d}/", "{d}/./", "{d}//", "file://{d}", "{link}", "{d}/latents", "{d}/a/.."],
)
def test_an_output_that_is_or_lies_inside_the_input_is_refused(tmp_path, checkpoint, capsys, output):
    d = tmp_path / "in"
    make_image_folder(d, good=3)
    (tmp_path / "link").symlink_to(d)
    before = snapshot(d)
    path = spec_file(tmp_path / "spec.yaml", str(d), output.format(d=d, link=tmp_path / "link"), checkpoint)
    assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
    line = one_error_line(capsys)
    assert re.search(r"output\.uri .* and input\.uri .* overlap", line), line
    assert snapshot(d) == before


def test_an_input_inside_the_output_is_refused_and_kept(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    make_image_folder(out / "_images" / "shard-00000", good=2)  # the user's photos, named like the job's folders
    make_image_folder(out, good=2)
    before = snapshot(out)
    path = spec_file(tmp_path / "spec.yaml", str(out / "_images"), str(out), checkpoint)
    assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
    assert "overlap" in one_error_line(capsys)
    path = spec_file(tmp_path / "spec.yaml", [str(tmp_path / "elsewhere.png"), f"file://{out}/a/img_000.png"], str(out), checkpoint)
    (tmp_path / "elsewhere.png").write_bytes(png_bytes(1))
    assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
    assert "input.uri[1]" in one_error_line(capsys)
    assert snapshot(out) == before


def test_the_job_removes_only_its_own_files_on_resume_and_overwrite(ray_local, tmp_path, checkpoint, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=5)
    users = {
        "shard-list.txt": b"my notes",
        "shard-00009.parquet": b"not the job's",
        "_images/holiday.png": png_bytes(3),
        "_rejects/README": b"mine",
    }
    for name, data in users.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    path = spec_file(tmp_path / "spec.yaml", str(folder), str(out), checkpoint)
    assert run(invert_dataset.main, path) == EXIT_OK
    (out / "_stats" / "shard-00001.json").unlink()  # an interrupted commit
    assert run(invert_dataset.main, path) == EXIT_OK
    assert run(invert_dataset.main, path, "--verify") == EXIT_OK
    assert {n: (out / n).read_bytes() for n in users} == users

    other = spec_file(tmp_path / "other.yaml", str(folder), str(out), checkpoint, output={"latent_dtype": "float16"})
    assert run(invert_dataset.main, other, "--overwrite") == EXIT_OK
    assert run(invert_dataset.main, other, "--verify") == EXIT_OK
    assert {n: (out / n).read_bytes() for n in users} == users
    capsys.readouterr()


def test_a_user_file_where_the_job_would_write_is_refused(tmp_path, checkpoint, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=3)
    out.mkdir()
    (out / "shard-00001.parquet").write_bytes(b"the user's")
    path = spec_file(tmp_path / "spec.yaml", str(folder), str(out), checkpoint)
    assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
    line = one_error_line(capsys)
    assert f"output.uri: 1 path this run would write holds files it did not write, e.g. file://{out}/shard-00001.parquet" in line
    assert snapshot(out) == {"shard-00001.parquet": b"the user's"}


def test_overwrite_keeps_the_old_output_when_the_new_engine_fails(ray_local, tmp_path, checkpoint, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=3)
    path = spec_file(tmp_path / "spec.yaml", str(folder), str(out), checkpoint)
    assert run(invert_dataset.main, path) == EXIT_OK
    before = {k: v for k, v in snapshot(out).items() if not k.startswith("_engines/")}
    broken = spec_file(tmp_path / "trt.yaml", str(folder), str(out), checkpoint, engine={"backend": "tensorrt"})
    capsys.readouterr()
    assert run(invert_dataset.main, broken, "--overwrite") == EXIT_BAD_SPEC  # no GPU here: the build fails
    assert "engine: could not build the tensorrt float32 engine" in one_error_line(capsys)
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("_engines/")} == before
    assert run(invert_dataset.main, path, "--verify") == EXIT_OK


def test_a_second_run_of_the_same_output_is_refused_naming_the_first(ray_local, tmp_path, checkpoint, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=3)
    path = spec_file(tmp_path / "spec.yaml", str(folder), str(out), checkpoint)
    fs, root = filesystem(str(out))
    first = RunLock.acquire(fs, root)
    try:
        assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
        line = one_error_line(capsys)
        assert f"another run is writing this output: run {first.holder['run_id']}" in line
        assert not (out / "_stats").exists()
    finally:
        first.release()
    assert run(invert_dataset.main, path) == EXIT_OK
    assert not (out / "_lock").exists()  # released at the end


def test_concurrent_runs_of_one_output_write_each_record_once(tmp_path, checkpoint):
    """Two real job processes started together on one output: one runs, the other exits 2 at once."""
    import os
    import subprocess
    import sys

    from helpers import S3_ENV

    root = Path(__file__).resolve().parents[2]
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=6)
    path = spec_file(tmp_path / "spec.yaml", str(folder), str(out), checkpoint)
    env = {**os.environ, **S3_ENV, "PYTHONPATH": str(root)}
    env.pop("RAY_ADDRESS", None)
    jobs = [
        subprocess.Popen([sys.executable, "-m", "jobs.invert_dataset", str(path), "--no-progress"], cwd=root, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = sorted((job.wait(timeout=300), job.stderr.read()) for job in jobs)
    assert [code for code, _ in results] == [EXIT_OK, EXIT_BAD_SPEC], results
    assert "another run" in results[1][1]
    assert invert_dataset.main([str(path), "--verify"]) == EXIT_OK


def test_equal_sample_keys_in_two_files_stay_two_records(ray_local, tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    write_tar(folder / "train" / "part.tar", [("face_0.png", png_bytes(1)), ("face_1.png", png_bytes(2))])
    write_tar(folder / "test" / "part.tar", [("face_0.png", png_bytes(3))])
    path = spec_file(tmp_path / "wds.yaml", str(folder), str(tmp_path / "wds"), checkpoint, input={"format": "webdataset"})
    assert run(invert_dataset.main, path) == EXIT_OK
    keys = pq.read_table(tmp_path / "wds").column("key").to_pylist()
    assert sorted(keys) == ["test/part.tar/face_0", "train/part.tar/face_0", "train/part.tar/face_1"]
    assert run(invert_dataset.main, path, "--verify") == EXIT_OK

    pq_folder = tmp_path / "pq"
    for split, seed in (("train", 10), ("test", 20)):
        (pq_folder / split).mkdir(parents=True)
        write_image_parquet(pq_folder / split / "data-00000.parquet", [(f"k{seed + i}", png_bytes(seed + i)) for i in range(2)])
    path = spec_file(tmp_path / "pq.yaml", str(pq_folder), str(tmp_path / "pqout"), checkpoint, input={"format": "parquet"})
    assert run(invert_dataset.main, path) == EXIT_OK
    keys = pq.read_table(tmp_path / "pqout").column("key").to_pylist()
    assert sorted(keys) == ["test/data-00000.parquet:0", "test/data-00000.parquet:1", "train/data-00000.parquet:0",
                            "train/data-00000.parquet:1"]
    assert run(invert_dataset.main, path, "--verify") == EXIT_OK
    capsys.readouterr()


def test_key_column_duplicates_are_refused_across_files_and_rejected_within_one(ray_local, tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image_parquet(folder / "a.parquet", [("k0", png_bytes(0)), ("k1", png_bytes(1))])
    write_image_parquet(folder / "b.parquet", [("k2", png_bytes(2)), ("k1", png_bytes(3))])
    path = spec_file(tmp_path / "spec.yaml", str(folder), str(tmp_path / "out"), checkpoint,
                     input={"format": "parquet", "key_column": "key"})
    assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
    line = one_error_line(capsys)
    assert f"input.key_column: key 'k1' is in both file://{folder}/a.parquet and file://{folder}/b.parquet" in line
    assert not (tmp_path / "out").exists()

    write_image_parquet(folder / "b.parquet", [("k2", png_bytes(2)), ("k3", png_bytes(3)), ("k2", png_bytes(4))])
    assert run(invert_dataset.main, path) == EXIT_OK
    assert "4 of 5 records inverted, 1 rejected" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "out")
    assert sorted(table.column("key").to_pylist()) == ["k0", "k1", "k2", "k3"]
    rejects = pq.read_table(tmp_path / "out" / "_rejects").to_pylist()
    assert [(r["key"], r["error"]) for r in rejects] == [("b.parquet:2", "key 'k2' repeats the key of row 0")]
    assert run(invert_dataset.main, path, "--verify") == EXIT_OK


def test_verify_finds_a_record_written_in_two_shards(ray_local, tmp_path, checkpoint, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=4)
    path = spec_file(tmp_path / "spec.yaml", str(folder), str(out), checkpoint)
    assert run(invert_dataset.main, path) == EXIT_OK
    first, second = (pq.read_table(out / f"shard-0000{i}.parquet") for i in (0, 1))
    pq.write_table(pa.concat_tables([second, first.slice(0, 1)]), out / "shard-00001.parquet")
    capsys.readouterr()
    assert run(invert_dataset.main, path, "--verify") == EXIT_FAILED
    report = capsys.readouterr().out
    key = first.column("key")[0].as_py()
    assert f"1 key in more than one shard: {key!r} ({key!r} is in shard-00000, shard-00001)" in report

    # An edit joined by key would pair records of different files: refused, naming both.
    edit_spec = tmp_path / "edit.yaml"
    edit_spec.write_text(yaml.safe_dump({
        "input": {"latents": str(out)},
        "model": {"checkpoint": str(checkpoint)},
        "output": {"uri": str(tmp_path / "mixed")},
        "edit": {"kind": "mixing", "styles": [key], "layers": [0]},
    }))
    assert run(edit.main, edit_spec) == EXIT_BAD_SPEC
    line = one_error_line(capsys)
    assert f"input: key {key!r} is in both file://{out}/shard-00000.parquet and file://{out}/shard-00001.parquet" in line
    assert not (tmp_path / "mixed").exists()


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test's output clean
        pass


@pytest.fixture
def http_files(tmp_path):
    """A loopback HTTP server over a folder (it ignores query strings, as a presigned URL's host checks them)."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_no_secret_reaches_any_output_byte_or_message(ray_local, tmp_path, checkpoint, capsys, http_files):
    served, host = http_files
    secrets = ["SIG-IN-1f9", "TOKEN-IN-2c7", "PASS-CKPT-3a1", "SIG-CKPT-4e0", "HDR-IN-5b2", "OUT-OPT-6d4", "CACHE-OPT-7f3",
               "HDR-CKPT-8a9"]
    for i in range(3):
        (served / f"face_{i}.png").write_bytes(png_bytes(i))
    (served / "e2style.pt").write_bytes(Path(checkpoint).read_bytes())
    query = f"X-Amz-Signature={secrets[0]}&X-Amz-Security-Token={secrets[1]}"
    (served / "junk.png").write_bytes(b"an upload cut short")
    inputs = [f"http://{host}/face_{i}.png?{query}" for i in range(3)] + [f"http://{host}/gone.png?{query}"]
    spec = {
        "input": {"uri": inputs, "shard_size": 2, "storage_options": {"headers": {"X-Api-Key": secrets[4]}}},
        "model": {
            "checkpoint": f"http://reader:{secrets[2]}@{host}/e2style.pt?X-Amz-Signature={secrets[3]}",
            "storage_options": {"headers": {"X-Api-Key": secrets[7]}},
        },
        "output": {"uri": str(tmp_path / "out"), "storage_options": {"auto_mkdir": True, "note": secrets[5]}},
        "engine": {"cache_uri": str(tmp_path / "out" / "_engines"), "cache_storage_options": {"note": secrets[6]}},
        "resources": {"batch_size": 2},
        "max_failure_rate": 0.0,  # a reject fails the job, so that message is checked too
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
    refused = capsys.readouterr().err
    assert f"input.uri: input http://{host}/gone.png?X-Amz-Signature=***&X-Amz-Security-Token=*** does not exist" in refused

    spec["input"]["uri"][-1] = f"http://{host}/junk.png?{query}"
    path.write_text(yaml.safe_dump(spec))
    assert run(invert_dataset.main, path) == EXIT_FAILED  # the junk file is a reject, over max_failure_rate
    assert run(invert_dataset.main, path, "--verify") == EXIT_OK
    printed = capsys.readouterr()
    assert "3 of 4 records inverted, 1 rejected" in printed.out

    texts = [refused, printed.out, printed.err]
    for file in (tmp_path / "out").rglob("*"):
        if file.is_file():
            texts.append(file.read_bytes().decode("latin-1"))
        if file.suffix == ".parquet":  # compressed columns: read them back as text too
            table = pq.read_table(file)
            texts.append(json.dumps(table.drop_columns([c for c in table.column_names if c == "w_plus"]).to_pylist()))
            texts.append(str(table.schema.metadata))
    everything = "\n".join(texts)
    assert not [s for s in secrets if s in everything]
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert sorted(r["key"] for r in rows) == ["face_0.png", "face_1.png", "face_2.png"]
    assert rows[0]["source"] == f"http://{host}/face_0.png?X-Amz-Signature=***&X-Amz-Security-Token=***"
    job = json.loads((tmp_path / "out" / "_job.json").read_text())
    assert job["checkpoint"] == f"http://{host}/e2style.pt?X-Amz-Signature=***"


def test_unwritable_output_names_are_rejects_and_the_job_goes_on(ray_local, tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    long_key = "x" * 248 + ".png"  # a legal file name whose edited name (".s+1.png") is not
    for i, key in enumerate(["a b.png", "a_b.png", long_key, "ok.png"]):
        (folder / key).write_bytes(png_bytes(i))
    config = make_e2style(stages=1, seed=71).config
    np.save(tmp_path / "direction.npy", np.ones(config.style_dim, np.float32))
    out = tmp_path / "edits"
    spec = {
        "input": {"uri": str(folder), "shard_size": 4},
        "model": {"checkpoint": str(checkpoint)},
        "output": {"uri": str(out)},
        "edit": {"kind": "direction", "direction": str(tmp_path / "direction.npy"), "strengths": [-1, 1]},
        "resources": {"batch_size": 4},
        "max_failure_rate": 0.5,
    }
    path = tmp_path / "edit.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert run(edit.main, path) == EXIT_OK
    assert "3 of 4 records edited, 1 rejected" in capsys.readouterr().out
    rejects = {r["key"]: r["error"] for r in pq.read_table(out / "_rejects").to_pylist()}
    assert list(rejects) == [long_key] and "is too long (256 bytes in one name, at most 255" in rejects[long_key]
    # "a b.png" and "a_b.png" make the same name: the second's images get a hash of key and variant instead.
    tag = lambda variant: hashlib.sha256(f"a_b.png\n{variant}".encode()).hexdigest()[:8]  # noqa: E731
    assert sorted(p.name for p in (out / "_images" / "shard-00000").iterdir()) == sorted([
        "a_b.s+1.png", "a_b.s-1.png", f"a_b.s+1-{tag('s+1')}.png", f"a_b.s-1-{tag('s-1')}.png", "ok.s+1.png", "ok.s-1.png"
    ])
    rows = pq.read_table(out).to_pylist()
    assert {(r["key"], r["image"].rsplit("/", 1)[1]) for r in rows if r["key"] == "a_b.png"} == {
        ("a_b.png", f"a_b.s-1-{tag('s-1')}.png"), ("a_b.png", f"a_b.s+1-{tag('s+1')}.png")
    }
    assert run(edit.main, path, "--verify") == EXIT_OK


def test_unreachable_or_unwritable_storage_is_one_line_and_exit_2(tmp_path, checkpoint, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens here once the socket closes
    folder = tmp_path / "in"
    make_image_folder(folder, good=2)
    path = spec_file(tmp_path / "s3.yaml", "s3://faces/in/", str(tmp_path / "out"), checkpoint,
                     input={"storage_options": {"endpoint_url": closed}})
    assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
    line = one_error_line(capsys)
    assert line.startswith("error: input.uri: EndpointConnectionError: Could not connect to the endpoint URL"), line

    (tmp_path / "a-file").write_bytes(b"not a folder")
    path = spec_file(tmp_path / "ro.yaml", str(folder), str(tmp_path / "a-file" / "out"), checkpoint)
    assert run(invert_dataset.main, path) == EXIT_BAD_SPEC
    line = one_error_line(capsys)
    assert line.startswith(f"error: output.uri: cannot write to {tmp_path}/a-file/out: "), line
    assert (tmp_path / "a-file").read_bytes() == b"not a folder"


def test_an_edit_whose_output_lies_inside_its_input_is_refused(tmp_path, checkpoint, capsys):
    """It would read its own images back as input on every rerun."""
    folder = tmp_path / "in"
    make_image_folder(folder, good=2)
    np.save(tmp_path / "direction.npy", np.ones(make_e2style(stages=1, seed=71).config.style_dim, np.float32))
    before = snapshot(folder)
    for field, source in (("uri", str(folder)), ("latents", str(folder))):
        path = tmp_path / "edit.yaml"
        path.write_text(yaml.safe_dump({
            "input": {field: source},
            "model": {"checkpoint": str(checkpoint)},
            "output": {"uri": f"file://{folder}/edits/"},
            "edit": {"kind": "direction", "direction": str(tmp_path / "direction.npy")},
        }))
        assert run(edit.main, path) == EXIT_BAD_SPEC
        assert re.search(rf"output\.uri file://{folder}/edits/ and input\.{field} {folder} overlap", one_error_line(capsys))
    assert snapshot(folder) == before
