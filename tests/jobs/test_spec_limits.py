"""Specs that are too big, too clever or numerically absurd, an unreachable Ray, and Ctrl-C: each ends
with one line and an exit code, quickly, with nothing written."""

import re
import socket
import time
from pathlib import Path

import pytest
import yaml

from helpers import make_image_folder
from factories import make_e2style, write_official
from jobs import cli, invert_dataset
from jobs.cli import EXIT_BAD_SPEC, EXIT_INTERRUPTED, MAX_SPEC_BYTES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_official(make_e2style(stages=1, seed=81), tmp_path_factory.mktemp("model") / "e2style.pt")


def base(tmp_path: Path, checkpoint) -> dict:
    make_image_folder(tmp_path / "in", good=2)
    return {
        "input": {"uri": str(tmp_path / "in")},
        "model": {"checkpoint": str(checkpoint)},
        "output": {"uri": str(tmp_path / "out")},
    }


def run_text(tmp_path: Path, text: str, capsys, lines: int = 1) -> tuple[int, str]:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    code = invert_dataset.main([str(path), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == lines, err
    return code, "\n".join(err)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, checkpoint, capsys):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    spec = yaml.safe_dump(base(tmp_path, checkpoint))
    bomb = spec.replace("input:", "input:\n  storage_options:\n" + "".join(f"    {line}\n" for line in lines), 1)
    assert len(bomb) < 2000
    started = time.time()
    code, line = run_text(tmp_path, bomb, capsys)
    assert time.time() - started < 5
    assert code == EXIT_BAD_SPEC
    assert re.search(r"spec .*spec.yaml expands to more than 100000 values \(nested YAML aliases\?\)", line), line
    assert not (tmp_path / "out").exists()


def test_aliases_that_share_options_between_sections_are_fine(tmp_path, checkpoint):
    from pipeline.inversion.spec import InversionSpec

    text = yaml.safe_dump(base(tmp_path, checkpoint))
    text = text.replace("input:", "input:\n  storage_options: &s3 {anon: false}", 1)
    text = text.replace("output:", "output:\n  storage_options: *s3", 1)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    spec = cli.load_spec(path, InversionSpec)
    assert spec.output.storage_options == spec.input.storage_options == {"anon": False}


@pytest.mark.parametrize("depth", [40, 100_000])  # past the limit; past what PyYAML's recursion survives
def test_deep_nesting_is_refused(tmp_path, checkpoint, capsys, depth):
    spec = yaml.safe_dump(base(tmp_path, checkpoint))
    nested = spec.replace("input:", "input:\n  storage_options: {x: " + "[" * depth + "]" * depth + "}", 1)
    code, line = run_text(tmp_path, nested, capsys)
    assert code == EXIT_BAD_SPEC and "nests mappings and lists more than 32 deep" in line, line


def test_an_integer_too_long_to_convert_is_refused_naming_the_spec(tmp_path, checkpoint, capsys):
    spec = yaml.safe_dump(base(tmp_path, checkpoint)).replace("input:", "input:\n  shard_size: " + "9" * 5000, 1)
    code, line = run_text(tmp_path, spec, capsys)
    assert code == EXIT_BAD_SPEC and re.search(r"spec .*spec.yaml is not valid YAML: Exceeds the limit", line), line


def test_a_spec_over_the_size_limit_is_refused(tmp_path, checkpoint, capsys):
    spec = yaml.safe_dump(base(tmp_path, checkpoint)) + "#" * MAX_SPEC_BYTES
    code, line = run_text(tmp_path, spec, capsys)
    assert code == EXIT_BAD_SPEC and f"is larger than {MAX_SPEC_BYTES} bytes" in line


@pytest.mark.parametrize(
    "section,field,value,message",
    [
        ("resources", "batch_size", 10**12, "resources.batch_size: Input should be less than or equal to 65536"),
        ("resources", "num_cpus_per_actor", ".inf", "resources.num_cpus_per_actor: Input should be a finite number"),
        ("resources", "num_gpus_per_actor", ".nan", "resources.num_gpus_per_actor: Input should be a finite number"),
        ("resources", "num_actors", 10**9, "resources.num_actors: Input should be less than or equal to 10000"),
        ("input", "shard_size", 10**30, "input.shard_size: Input should be less than or equal to 1000000"),
        ("output", "row_group_size", -1, "output.row_group_size: Input should be greater than or equal to 1"),
        ("engine", "max_batch", 10**9, "engine.max_batch: Input should be less than or equal to 65536"),
        (None, "max_failure_rate", ".nan", "max_failure_rate: Input should be a finite number"),
        ("engine", "gate", {"min_psnr_db": ".inf"}, "engine.gate.min_psnr_db: Input should be a finite number"),
        ("model", "stages", 10**6, "model.stages: Input should be less than or equal to 64"),
        # Ray refuses nonzero resource requests below 0.0001, so the spec does first.
        ("resources", "num_gpus_per_actor", 1e-9, "num_gpus_per_actor: Value error, must be 0 or at least 0.0001"),
        ("resources", "decode_cpus", 1e-5, "resources.decode_cpus: Input should be greater than or equal to 0.0001"),
        (
            "input",
            "formats",
            ["PNG", "EPS"],
            "input.formats.1: Input should be 'PNG', 'JPEG', 'WEBP', 'BMP', 'TIFF', 'GIF', 'PPM', 'TGA' or 'JPEG2000'",
        ),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_field(
    tmp_path, checkpoint, capsys, section, field, value, message
):
    spec = base(tmp_path, checkpoint)
    target = spec.setdefault(section, {}) if section else spec
    target[field] = value
    text = yaml.safe_dump(spec).replace("'.inf'", ".inf").replace("'.nan'", ".nan")
    code, text = run_text(tmp_path, text, capsys, lines=2)  # "spec ... is invalid:", then the field
    assert code == EXIT_BAD_SPEC and message in text, text
    assert not (tmp_path / "out").exists()


def test_an_unreachable_ray_address_fails_in_seconds(tmp_path, checkpoint, capsys, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    spec = {**base(tmp_path, checkpoint), "ray_address": f"127.0.0.1:{port}"}
    monkeypatch.setattr("ray.is_initialized", lambda: False)  # as in a fresh driver, even beside the suite's Ray
    started = time.time()
    code, line = run_text(tmp_path, yaml.safe_dump(spec), capsys)
    assert time.time() - started < 30
    assert code == EXIT_BAD_SPEC
    assert f"ray_address: cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused" in line
    assert not (tmp_path / "out").exists()

    spec.pop("ray_address")
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    code, line = run_text(tmp_path, yaml.safe_dump(spec), capsys)
    assert code == EXIT_BAD_SPEC and f"RAY_ADDRESS: cannot reach the Ray cluster at ray://127.0.0.1:{port}" in line


def test_ctrl_c_ends_with_one_line(tmp_path, checkpoint, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_job", interrupted)
    code, line = run_text(tmp_path, yaml.safe_dump(base(tmp_path, checkpoint)), capsys)
    assert code == EXIT_INTERRUPTED
    assert line == "interrupted: committed shards are kept; run the same command again to resume"


def test_a_run_without_an_address_starts_its_own_ray(monkeypatch):
    """Never the cluster that happens to run on the machine: ``address="local"`` makes Ray start a new one."""
    import ray

    from pipeline.core.cluster import start_ray

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("Context", (), {"gcs_address": "127.0.0.1:1"})())
    assert start_ray(None) == "a local Ray started for this job (127.0.0.1:1)"
    assert calls[0]["address"] == "local" and calls[0]["_node_ip_address"] == "127.0.0.1"
