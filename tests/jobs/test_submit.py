"""The README's way to a Ray cluster, run as written: a token for Ray's authentication, a head on loopback,
the sample spec sent with `ray job submit --working-dir .`, the committed output read back, the head stopped.

The head gets free ports and a temp dir of its own, and is stopped by killing its process tree, as `ray
stop` would stop every Ray on the machine (the suite's own among them)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import free_ports, kill_process_tree
from engines import load_inverter
from jobs import make_sample
from operators.images import images_to_tensor
from pipeline.core.decode import decode_image
from pipeline.core.store import latent_codes

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
FACES = [f"face_{i:02d}.png" for i in range(6)]


def ray(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def submit(address: str, spec: Path, env: dict) -> subprocess.CompletedProcess:
    """`ray job submit` as the README gives it, retried while the head's job server is still starting."""
    command = ["job", "submit", f"--address={address}", "--working-dir", ".", "--",
               "python", "-m", "jobs.invert_dataset", str(spec), "--no-progress"]
    deadline = time.time() + 120
    while True:
        done = ray(command, env, timeout=300)
        starting = any(m in done.stdout + done.stderr for m in ("Failed to connect", "try again later"))
        if not starting or time.time() > deadline:
            return done
        time.sleep(2)


@pytest.mark.slow
@pytest.mark.parametrize("head_auth", ["token", "disabled"])
def test_the_sample_submitted_to_a_local_head(tmp_path, head_auth):
    """The README's commands, in a shell where RAY_AUTH_MODE=token is exported, against the head they start
    (token authentication on) and against a head that has it off (an older Ray, or a cluster set up so)."""
    into = tmp_path / "sample"
    assert make_sample.main(["--into", str(into), "--specs", str(into / "specs")]) == 0
    home = tmp_path / "home"  # a user without a Ray token yet; the machine's ~/.ray stays untouched
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the activated venv
    env.pop("RAY_ADDRESS", None)
    generated = ray(["get-auth-token", "--generate"], env)
    assert generated.returncode == 0, generated.stderr
    assert (home / ".ray" / "auth_token").read_text().strip() == generated.stdout.strip()

    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths stay under 108 bytes
    gcs, dashboard, agent_http, agent_grpc, client = free_ports(5)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--ray-client-server-port={client}", "--num-cpus=2",
         f"--temp-dir={ray_dir}"],
        cwd=ROOT, env={**env, "RAY_AUTH_MODE": head_auth}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        done = submit(address, into / "specs" / "invert.yaml", env)
        logs = done.stdout + done.stderr
        assert done.returncode == 0, logs
        assert "succeeded: 6 of 6 records inverted" in logs, logs
        assert re.search(rf"ray: the Ray cluster at [0-9.]+:{gcs}\b", logs), logs  # the head, not a Ray of its own
        # Without RAY_AUTH_MODE=token the CLI sends no token, which only a head without authentication takes.
        tokenless = ray(["job", "list", f"--address={address}"], {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"})
        if head_auth == "token":
            assert tokenless.returncode != 0 and "authentication token" in (tokenless.stdout + tokenless.stderr).lower()
        else:
            assert tokenless.returncode == 0, tokenless.stderr
    finally:
        kill_process_tree(head)
        shutil.rmtree(ray_dir, ignore_errors=True)

    tables = [pq.read_table(p) for p in sorted((into / "invert").glob("shard-*.parquet"))]
    assert [k for t in tables for k in t.column("key").to_pylist()] == FACES
    codes = np.concatenate([latent_codes(t) for t in tables])
    faces = np.stack([decode_image((ROOT / "samples" / "faces" / k).read_bytes(), 32, True, False) for k in FACES])
    expected = load_inverter(str(into / "model" / "e2style-tiny-64-stage2.pt")).invert(images_to_tensor(faces.copy()))
    np.testing.assert_allclose(codes, expected.numpy(), rtol=0, atol=1e-5)


def test_a_relative_output_in_a_submitted_job_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from pipeline.core.errors import PreflightError
    from pipeline.core.preflight import check_output_outlives_a_submitted_job
    from pipeline.inversion.spec import InversionSpec

    def spec(output):
        return InversionSpec.model_validate({"input": {"uri": "in/"}, "model": {"checkpoint": "m.pt"}, "output": {"uri": output}})

    submitted = {"RAY_JOB_CONFIG_JSON_ENV_VAR": '{"runtime_env": {"working_dir": "gcs://_ray_pkg_0.zip"}, "metadata": {}}'}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PreflightError, match=rf"output.uri: 'outputs/latents/' is a relative path, and this job was "
                                             rf"submitted with `ray job submit`: it runs in a temporary folder of Ray's \({re.escape(str(tmp_path))}\)"):
        check_output_outlives_a_submitted_job(spec("outputs/latents/"), submitted)
    for kept in (str(tmp_path / "out"), "s3://bucket/out/", "file:///data/out"):
        check_output_outlives_a_submitted_job(spec(kept), submitted)
    check_output_outlives_a_submitted_job(spec("outputs/latents/"), {})  # run from a shell: its own folder
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", submitted["RAY_JOB_CONFIG_JSON_ENV_VAR"])
    from pipeline.core.preflight import plan_job
    from pipeline.inversion.job import INVERSION

    with pytest.raises(PreflightError, match="output.uri: 'outputs/latents/' is a relative path"):
        plan_job(spec("outputs/latents/"), INVERSION)
    assert not (tmp_path / "outputs").exists()
