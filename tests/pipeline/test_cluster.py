"""Which Ray a job runs on: a named cluster that does not answer fails in seconds, naming where the address
came from; no address starts a Ray of the job's own even beside a cluster running on the machine."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray

from helpers import free_ports, kill_process_tree
from pipeline.core.cluster import ClusterError, check_reachable, start_ray
from pipeline.core.schedule import shards_in_flight
from pipeline.core.spec import ResourcesSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_driver(monkeypatch):
    """As in a new driver process, even where this test process runs the suite's Ray."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


@pytest.mark.parametrize("form", ["{}", "ray://{}", "http://{}"])
def test_an_unreachable_ray_address_fails_in_seconds(fresh_driver, monkeypatch, form):
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init ran for an unreachable address"))
    address = form.format(f"127.0.0.1:{free_ports(1)[0]}")
    started = time.time()
    with pytest.raises(ClusterError, match=f"^ray_address: cannot reach the Ray cluster at {address}: "):
        start_ray(address)
    assert time.time() - started < 10


def test_an_unreachable_ray_address_env_names_ray_address_env(fresh_driver, monkeypatch):
    address = f"127.0.0.1:{free_ports(1)[0]}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ClusterError, match=f"^RAY_ADDRESS: cannot reach the Ray cluster at {address}"):
        start_ray(None)


@pytest.mark.parametrize("address", ["127.0.0.1", "ray://:6379", "127.0.0.1:99999", "127.0.0.1:port"])
def test_an_address_without_a_usable_host_and_port_is_refused(address):
    with pytest.raises(ClusterError, match="^ray_address: not a Ray address"):
        check_reachable(address, "ray_address")


def test_auto_names_no_host_to_check():
    check_reachable("auto", "ray_address")  # the cluster on this machine: ray.init finds it


def test_a_failed_ray_init_names_the_field(fresh_driver, monkeypatch):
    def refuses(**kwargs):
        raise ConnectionError("the token did not match")

    monkeypatch.setattr(ray, "init", refuses)
    with socket.socket() as listening:  # the TCP check passes; the handshake does not
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = "127.0.0.1:%d" % listening.getsockname()[1]
        with pytest.raises(ClusterError, match=f"^ray_address: cannot join the Ray cluster at {address}: "
                           "ConnectionError: the token did not match"):
            start_ray(address)
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(ClusterError, match="^RAY_ADDRESS: cannot join"):
            start_ray(None)


# Run in a process of its own: the test process may hold the suite's Ray, and a driver holds one Ray at once.
DRIVER = """
import ray
from ray._private.services import canonicalize_bootstrap_address
from pipeline.core.cluster import start_ray

print(canonicalize_bootstrap_address(None))  # what a plain ray.init() would join
print(start_ray(None))
print(ray.get_runtime_context().gcs_address)
ray.shutdown()
"""


@pytest.mark.slow
def test_no_address_starts_a_new_ray_beside_a_running_cluster():
    # A private Ray temp root: `ray start` records its address there, where a plain ray.init() looks, and
    # neither the machine's /tmp/ray nor other Ray users see this head.
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths stay under 108 bytes
    gcs, agent_http, agent_grpc = free_ports(3)  # the suite's own Ray holds the default ports
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--include-dashboard=false", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", "--num-cpus=1"],
        env={**env, "RAY_AUTH_MODE": "token"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        recorded = Path(ray_tmp) / "ray" / "ray_current_cluster"
        deadline = time.time() + 120
        while not recorded.exists() and head.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert recorded.exists(), "ray start --head did not come up"
        driver = subprocess.run(
            [sys.executable, "-c", DRIVER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert driver.returncode == 0, driver.stderr
        would_join, described, joined = driver.stdout.strip().splitlines()[-3:]
        # The head is there to be attached to (recorded under the machine's address, on the head's port).
        assert would_join.endswith(f":{gcs}"), would_join
        assert described == f"a local Ray started for this job ({joined})"
        assert joined != would_join and not joined.endswith(f":{gcs}"), joined
    finally:
        kill_process_tree(head)  # by id: `ray stop` would stop every Ray on the machine
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize(
    "resources, cluster_cpus, expected",
    [
        ({"num_cpus_per_actor": 4, "num_gpus_per_actor": 1, "decode_cpus": 2}, 16, 2 + 6),  # a GPU node: 12 CPUs decode
        ({"num_actors": 2, "num_cpus_per_actor": 2, "num_gpus_per_actor": 1, "decode_cpus": 1}, 16, 4 + 12),
        ({"num_cpus_per_actor": 1.5, "decode_cpus": 0.5}, 2, 2 + 1),
        ({"num_cpus_per_actor": 0.5, "decode_cpus": 0.75}, 2, 2 + 2),
        ({"num_cpus_per_actor": 2, "decode_cpus": 1}, 2, 2 + 1),  # nothing free: still one read ahead
        ({"num_cpus_per_actor": 4, "decode_cpus": 2, "shards_in_flight": 5}, 16, 5),  # as the spec says
    ],
)
def test_shards_read_ahead_fill_the_cpus_the_actors_leave(resources, cluster_cpus, expected):
    assert shards_in_flight(ResourcesSpec.model_validate(resources), cluster_cpus) == expected
