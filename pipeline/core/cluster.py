"""Which Ray a job runs on: the cluster it is told to join, or a new local one of its own.

A run with no ``ray_address`` in its spec and no ``RAY_ADDRESS`` in its environment starts its own Ray and
never attaches to a cluster that happens to run on the machine (which would run the job under that
cluster's Python environment and resources). Ray (2.60) still listens on the machine's address, whatever
``_node_ip_address`` says, and guards that with the token authentication it turns on by default.
A named address is checked with a TCP connection first, so a wrong or unreachable one fails in seconds
instead of Ray's minutes of retries.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import ray

CONNECT_TIMEOUT_S = 5.0


class ClusterError(ValueError):
    """The Ray cluster named by the spec or the environment cannot be joined; the message names which."""


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address: ``host:port``, ``ray://host:port`` or ``http(s)://host:port``; None
    for ``auto`` and ``local``, which name no host."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ClusterError(f"not a Ray address (host:port, ray://host:port or http://host:port): {address!r}")
    return parts.hostname, port


def check_reachable(address: str, field: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ClusterError naming ``field`` unless something accepts TCP connections at ``address``."""
    try:
        where = _host_port(address)
    except ClusterError as e:
        raise ClusterError(f"{field}: {e}") from None
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout):
            pass
    except OSError as e:
        raise ClusterError(f"{field}: cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def start_ray(address: str | None) -> str:
    """Join the cluster at ``address`` (the spec's ``ray_address``), else the one in ``RAY_ADDRESS`` (as
    under ``ray job submit``), else start a local Ray for this job. Returns what it joined or started."""
    if ray.is_initialized():  # an embedding program (or a test) started Ray already
        return f"the Ray this process already runs ({ray.get_runtime_context().gcs_address})"
    field = "ray_address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if address == "local":  # Ray's name for what no address gives: a Ray of this job's own
        address = None
    try:
        if address:
            check_reachable(address, field)
            ray.init(address=address, log_to_driver=False)
            return f"the Ray cluster at {address}"
        # "local" makes a new cluster even where another one runs on this machine; without it ray.init joins
        # the one `ray start` recorded. The loopback IP is a request Ray 2.60 maps to the machine's address.
        ray.init(address="local", include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    except ClusterError:
        raise
    except Exception as e:  # a refused handshake, a token Ray asks for and did not get
        where = f"{field}: cannot join the Ray cluster at {address}" if address else "cannot start a local Ray"
        raise ClusterError(f"{where}: {type(e).__name__}: {e}") from None
    return f"a local Ray started for this job ({ray.get_runtime_context().gcs_address})"
