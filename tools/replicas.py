"""The replica processes of a running application: names, pids and resident memory.

For operators' scripts (`tools.soak`) and fault-injection tests. It reads
the actor table straight from the GCS, so it works without the dashboard, which
Ray's state API (`ray.util.state`) needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray._private.state import actors as _actor_table

REPLICA_PREFIX = "SERVE_REPLICA::"


@dataclass(frozen=True)
class Replica:
    """One live replica actor."""

    name: str  # the actor name, SERVE_REPLICA::<app>#<deployment>#<id>
    app: str
    deployment: str
    pid: int

    @property
    def replica_id(self) -> str:
        return self.name.rsplit("#", 1)[-1]


def list_replicas(app: str, deployment: str | None = None) -> list[Replica]:
    """Live replicas of `app` (and of one deployment, if given), sorted by name."""
    found = []
    for info in _actor_table().values():
        name = info.get("Name") or ""
        if info.get("State") != "ALIVE" or not name.startswith(REPLICA_PREFIX):
            continue
        app_name, dep_name, _ = name[len(REPLICA_PREFIX) :].split("#", 2)
        if app_name == app and deployment in (None, dep_name):
            found.append(Replica(name, app_name, dep_name, int(info.get("Pid") or 0)))
    return sorted(found, key=lambda r: r.name)


def kill_replica(replica: Replica) -> None:
    """Kill the replica's actor abruptly, as a crash or an OOM kill would."""
    ray.kill(ray.get_actor(replica.name, namespace="serve"), no_restart=True)


def wait_for_replacement(
    app: str, deployment: str, gone: Replica, timeout_s: float = 60.0
) -> Replica:
    """Wait until Serve runs a new replica of `deployment` in place of `gone`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = [r for r in list_replicas(app, deployment) if r.name != gone.name]
        if fresh:
            return fresh[0]
        time.sleep(0.25)
    raise TimeoutError(f"{deployment} replica {gone.replica_id} not replaced in {timeout_s} s")


def rss_bytes(pid: int) -> int:
    """Resident memory of a local process (VmRSS), in bytes; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0
