"""The RayService of `k8s/rayservice.yaml` as Ray nodes on this machine, deployed as KubeRay does.

KubeRay starts every pod with a `ray start` command built from its group's
`rayStartParams` and container limits, then PUTs `serveConfigV2` as JSON to the head's
dashboard (`/api/serve/applications/`), polls it until the application is RUNNING, and
PUTs it again whenever it changes (an in-place upgrade). This module does the same with
local processes: one `ray start --block` per pod, started from the manifest, so a
command line, environment variable, import path or resource request that only breaks
on that path breaks here too.

What one host without a GPU changes, and nothing else:

- Ports. The pods' fixed ports (GCS 6379, dashboard 8265, client 10001, metrics 8080,
  dashboard agent 52365, Serve 8000) become free ports picked at start: the nodes share
  one network namespace, and other Ray clusters may run on the machine.
- Files. Each node gets its own `--temp-dir` under one private root and its own empty
  working directory and `HOME`, as each container has its own filesystem (so a Ray
  auth token in this user's `~/.ray` does not turn on the token auth the manifest
  leaves off). A PersistentVolumeClaim
  becomes one host folder shared by every node that mounts it (ReadWriteMany), and an
  environment value under a mount path is rewritten to that folder.
- Secrets. `secretKeyRef` values come from the caller.
- GPUs. A group's `nvidia.com/gpu` limit becomes Ray's `GPU` resource (`--num-gpus`,
  as KubeRay sets it), declared with no device behind it. `CHATTERBOX_ENGINE` becomes
  `simulated`, and the model deployment still asks for the GPU the vLLM engine asks for,
  so it can only land on a GPU worker.
- The proxy. `proxy_location: HeadOnly`: every node's proxy would bind the same port.

    python -m tools.cluster   # start it, print the URLs, stop on Ctrl-C
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from chatterbox_serve.config import env_names, load_settings
from deployments.defaults import MODEL, deployment_defaults

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "k8s" / "rayservice.yaml"
HEAD = "head"
APP = "chatterbox"
GPU_LIMIT = "nvidia.com/gpu"
# What KubeRay adds to every `ray start` when rayStartParams leave it out.
KUBERAY_DEFAULTS = {"metrics-export-port": "8080", "dashboard-agent-listen-port": "52365"}
KUBERAY_HEAD_DEFAULTS = {"port": "6379"}
# Fixed ports of a pod (given, or Ray's defaults), picked free here for every node and
# for the head. Ray picks the node's other ports itself.
NODE_PORTS = ("metrics-export-port", "dashboard-agent-listen-port")
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port")
_QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


@dataclass(frozen=True)
class PodGroup:
    """One group of pods of the manifest: how KubeRay starts each of its pods."""

    name: str
    replicas: int
    params: dict[str, str]
    limits: dict[str, str]
    env: list[dict[str, Any]]
    mounts: dict[str, str]  # mountPath -> PersistentVolumeClaim name


@dataclass
class Node:
    """One running pod: its `ray start --block` process and where to reach it."""

    group: str
    process: subprocess.Popen[bytes]
    temp_dir: Path
    metrics_url: str
    node_id: str = ""


class NodeExited(RuntimeError):
    """A node's `ray start` exited before the node joined the cluster."""

    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.node = node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def quantity(value: str) -> float:
    """A Kubernetes quantity ("4", "500m", "8Gi") as a number."""
    if value.endswith("m"):
        return float(value[:-1]) / 1000
    for suffix, factor in _QUANTITY.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def read_manifest(path: Path = MANIFEST) -> tuple[dict[str, Any], list[PodGroup]]:
    """The manifest's `serveConfigV2` and its pod groups, head first."""
    spec = yaml.safe_load(path.read_text())["spec"]
    cluster = spec["rayClusterConfig"]
    heads = {HEAD: (cluster["headGroupSpec"], 1)}
    workers = {g["groupName"]: (g, int(g.get("replicas", 1))) for g in cluster["workerGroupSpecs"]}
    groups = []
    for name, (group, replicas) in {**heads, **workers}.items():
        pod = group["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"].startswith("ray-")]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        params = {k: str(v) for k, v in group.get("rayStartParams", {}).items()}
        if name == HEAD and cluster.get("enableInTreeAutoscaling"):
            params["no-monitor"] = "true"  # the autoscaler runs in its own container
        mounts = {
            m["mountPath"]: claims[m["name"]]
            for m in container.get("volumeMounts", [])
            if m["name"] in claims
        }
        limits = {k: str(v) for k, v in container["resources"]["limits"].items()}
        groups.append(PodGroup(name, replicas, params, limits, container.get("env", []), mounts))
    return yaml.safe_load(spec["serveConfigV2"]), groups


def ray_start_args(group: PodGroup) -> dict[str, str]:
    """`ray start` parameters as KubeRay builds them for a pod of `group`.

    KubeRay's defaults, then the container's limits (CPU, memory, `nvidia.com/gpu`),
    then `rayStartParams`, which win over both.
    """
    params = {**KUBERAY_DEFAULTS, **(KUBERAY_HEAD_DEFAULTS if group.name == HEAD else {})}
    if "cpu" in group.limits:
        params["num-cpus"] = str(math.ceil(quantity(group.limits["cpu"])))
    if "memory" in group.limits:
        params["memory"] = str(int(quantity(group.limits["memory"])))
    if GPU_LIMIT in group.limits:
        params["num-gpus"] = str(int(quantity(group.limits[GPU_LIMIT])))
    params.update(group.params)  # rayStartParams win over what the limits imply
    return params


def _command(params: Mapping[str, str], head: bool) -> list[str]:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    flags = [f"--{k}" if v == "true" else f"--{k}={v}" for k, v in params.items()]
    return [ray, "start", *(["--head"] if head else []), "--block", *flags]


class LocalRayService:
    """A head and the worker pods of the manifest as local Ray nodes, and its Serve config.

    Args:
        secrets: values of `secretKeyRef`s, by "<secret name>/<key>".
        engine: what `CHATTERBOX_ENGINE` becomes on every node.
    """

    def __init__(
        self, secrets: Mapping[str, str], engine: str = "simulated", manifest: Path = MANIFEST
    ) -> None:
        self.serve_config, groups = read_manifest(manifest)
        self.groups = {g.name: g for g in groups}
        self.secrets = dict(secrets)
        self.engine = engine
        self.root = Path(tempfile.mkdtemp(prefix="cluster-", dir="/tmp"))
        self.volumes = self.root / "volumes"
        self.nodes: list[Node] = []
        self.http_port = free_port()
        self.dashboard_port = free_port()
        self.gcs_address = ""
        self._serial = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def volume(self, claim: str) -> Path:
        """The host folder standing for a PersistentVolumeClaim."""
        path = self.volumes / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self) -> None:
        """Start the head, then every worker group's `replicas` pods."""
        for group in self.groups.values():
            for _ in range(group.replicas):
                self.add_node(group.name)

    def add_node(self, group_name: str, timeout_s: float = 90, restarts: int = 2) -> Node:
        """Start one pod of `group_name`, as KubeRay does for a new or restarted pod.

        A `ray start` that exits before its node joins (on a loaded machine a raylet can
        miss Ray's startup timeout) is started again, up to `restarts` times, as the
        kubelet restarts a failed container.
        """
        for attempt in range(restarts + 1):
            try:
                return self._start_node(group_name, timeout_s)
            except NodeExited as exc:
                logger.warning("pod %s failed to start (attempt %d): %s", group_name, attempt, exc)
                self.kill_node(exc.node)
        raise RuntimeError(f"a {group_name} pod failed to start {restarts + 1} times")

    def _start_node(self, group_name: str, timeout_s: float) -> Node:
        group = self.groups[group_name]
        head = group.name == HEAD
        self._serial += 1
        name = f"{group.name}-{self._serial}"
        params = ray_start_args(group)
        for key in NODE_PORTS + (HEAD_PORTS if head else ()):
            params[key] = str(free_port())
        if head:
            params["dashboard-port"] = str(self.dashboard_port)
            self.gcs_address = f"127.0.0.1:{params['port']}"
        else:
            params["address"] = self.gcs_address
        temp_dir = self.root / name
        params["temp-dir"] = str(temp_dir / "ray")
        (temp_dir / "workdir").mkdir(parents=True)
        (temp_dir / "home").mkdir()
        known = {n["node_id"] for n in self.ray_nodes()} if not head else set()
        with (temp_dir / "ray-start.log").open("wb") as out:  # the child keeps its own fd
            process = subprocess.Popen(
                _command(params, head),
                cwd=temp_dir / "workdir",
                env={**self._env(group), "HOME": str(temp_dir / "home")},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = Node(
            group.name,
            process,
            temp_dir,
            f"http://127.0.0.1:{params['metrics-export-port']}/metrics",
        )
        self.nodes.append(node)
        deadline = time.monotonic() + timeout_s
        while not node.node_id:
            if process.poll() is not None:
                log = (temp_dir / "ray-start.log").read_text()[-2000:]
                raise NodeExited(node, f"{name} exited: {log}")
            if time.monotonic() > deadline:
                log = (temp_dir / "ray-start.log").read_text()[-2000:]
                raise TimeoutError(f"{name} did not join the cluster in {timeout_s} s: {log}")
            time.sleep(0.5)
            try:
                alive = [n["node_id"] for n in self.ray_nodes() if n["state"] == "ALIVE"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue  # the dashboard is starting
            fresh = [
                n for n in alive if n not in known and n not in {m.node_id for m in self.nodes}
            ]
            if fresh:
                node.node_id = fresh[0]
        return node

    def _env(self, group: PodGroup) -> dict[str, str]:
        """The container's environment, over this process's minus Ray's and our settings."""
        ours = set(env_names())
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k not in ours}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        for entry in group.env:
            if "valueFrom" in entry:
                ref = entry["valueFrom"]["secretKeyRef"]
                value = self.secrets[f"{ref['name']}/{ref['key']}"]
            else:
                value = str(entry["value"])
            env[entry["name"]] = self._host_path(value, group.mounts)
        env["CHATTERBOX_ENGINE"] = self.engine
        return env

    def _host_path(self, value: str, mounts: Mapping[str, str]) -> str:
        """`value` with a leading mount path replaced by its volume's host folder."""
        for mount, claim in mounts.items():
            if value == mount or value.startswith(mount + "/"):
                return str(self.volume(claim)) + value[len(mount) :]
        return value

    def kill_node(self, node: Node) -> None:
        """Kill every process of the node at once, as a lost pod or machine would."""
        for proc in self._processes(node):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        node.process.wait(timeout=30)
        self.nodes.remove(node)

    def _processes(self, node: Node) -> list[psutil.Process]:
        """The `ray start` process, its descendants, and any other process of the node.

        Every process a node starts inherits its own `HOME`, or names its temp dir.
        """
        found: dict[int, psutil.Process] = {}
        try:
            top = psutil.Process(node.process.pid)
            for proc in [top, *top.children(recursive=True)]:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
        marker, home = str(node.temp_dir), str(node.temp_dir / "home")
        for proc in psutil.process_iter(["cmdline"]):
            try:
                ours = proc.environ().get("HOME") == home
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                ours = False
            if ours or any(marker in part for part in proc.info["cmdline"] or ()):
                found[proc.pid] = proc
        return list(found.values())

    def stop(self) -> None:
        """Stop every node (workers first), then remove the private folders."""
        for node in reversed(self.nodes):
            procs = self._processes(node)
            for proc in procs:
                try:
                    proc.terminate()
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(procs, timeout=10)
            for proc in alive:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            node.process.wait(timeout=30)
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def ray_nodes(self) -> list[dict[str, Any]]:
        """Every node the head knows, from its dashboard's state API."""
        r = httpx.get(f"{self.dashboard_url}/api/v0/nodes", params={"limit": 100}, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"]["result"]["result"])

    def single_host_config(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`serveConfigV2` with this module's single-host changes and extra `settings`."""
        config = copy.deepcopy(self.serve_config)
        config["proxy_location"] = "HeadOnly"
        config["http_options"]["port"] = self.http_port
        (app,) = [a for a in config["applications"] if a["name"] == APP]
        args = app.setdefault("args", {})
        # A path setting names a mount of the pods that use it: the volume's host folder.
        mounts = {m: c for g in self.groups.values() for m, c in g.mounts.items()}
        args["settings"] = {
            k: self._host_path(v, mounts) if isinstance(v, str) else v
            for k, v in {**args.get("settings", {}), **(settings or {})}.items()
        }
        # The simulated engine needs no GPU; ask for the one the real engine asks for.
        gpu = deployment_defaults(load_settings({}, None), needs_gpu=True)[MODEL]
        model = args.setdefault("deployments", {}).setdefault(MODEL, {})
        actor = model.setdefault("ray_actor_options", {})
        actor["num_gpus"] = gpu["ray_actor_options"]["num_gpus"]
        return config

    def submit(self, config: Mapping[str, Any]) -> None:
        """PUT the Serve config to the head's dashboard, as KubeRay does on every change."""
        r = httpx.put(f"{self.dashboard_url}/api/serve/applications/", json=config, timeout=60)
        r.raise_for_status()

    def applications(self) -> dict[str, Any]:
        """The dashboard's Serve details: applications, deployments, replicas, nodes."""
        r = httpx.get(f"{self.dashboard_url}/api/serve/applications/", timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def wait_running(self, timeout_s: float = 180) -> dict[str, Any]:
        """Wait until the application is RUNNING; return its details."""
        deadline = time.monotonic() + timeout_s
        status = "absent"
        while time.monotonic() < deadline:
            try:
                app = self.applications().get("applications", {}).get(APP)
            except httpx.HTTPError:
                app = None
            status = app["status"] if app else "absent"
            if status == "RUNNING":
                return dict(app)
            if status == "DEPLOY_FAILED":
                raise RuntimeError(f"deploy failed: {app['message']}")
            time.sleep(1)
        raise TimeoutError(f"application {APP} is {status} after {timeout_s} s")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    # SIGTERM as well as Ctrl-C must reach the `finally` that stops the nodes.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    service = LocalRayService({"chatterbox-api-keys/API_KEYS": "local-key"})
    try:
        service.start()
        service.submit(service.single_host_config())
        service.wait_running()
        urls = {
            "api": service.base_url,
            "api_key": "local-key",
            "dashboard": service.dashboard_url,
            "metrics": {n.group: n.metrics_url for n in service.nodes},
        }
        print(json.dumps(urls, indent=2), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


if __name__ == "__main__":
    main()
