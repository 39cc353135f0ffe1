"""tools/cluster.py without Ray: the `ray start` commands, env and Serve config it derives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tools.cluster import HEAD, LocalRayService, PodGroup, quantity, ray_start_args

KEY = "chatterbox-api-keys/API_KEYS"


@pytest.fixture()
def service() -> Iterator[LocalRayService]:
    s = LocalRayService({KEY: "k1"})
    yield s
    s.stop()  # no node started: removes the private folder only


def test_quantities() -> None:
    assert quantity("500m") == 0.5 and quantity("4") == 4
    assert quantity("8Gi") == 8 * 2**30 and quantity("1G") == 10**9


def test_commands_are_kuberays(service: LocalRayService) -> None:
    head, gpu, cpu = (
        ray_start_args(service.groups[g]) for g in (HEAD, "gpu-workers", "cpu-workers")
    )
    assert head == {
        "metrics-export-port": "8080",
        "dashboard-agent-listen-port": "52365",
        "port": "6379",
        "num-cpus": "0",  # rayStartParams win over the 2-CPU limit
        "memory": str(8 * 2**30),
        "dashboard-host": "0.0.0.0",
        "no-monitor": "true",  # enableInTreeAutoscaling
    }
    assert (gpu["num-cpus"], gpu["num-gpus"], gpu["memory"]) == ("0", "1", str(48 * 2**30))
    assert (cpu["num-cpus"], cpu["memory"]) == ("4", str(8 * 2**30)) and "num-gpus" not in cpu
    assert "port" not in gpu and "no-monitor" not in cpu


def test_rounding_up_fractional_cpus() -> None:
    group = PodGroup("g", 1, {}, {"cpu": "1500m"}, [], {})
    assert ray_start_args(group)["num-cpus"] == "2"


def test_env_takes_secrets_volumes_and_the_cpu_engine(service: LocalRayService) -> None:
    env = service._env(service.groups["gpu-workers"])
    assert env["API_KEYS"] == "k1" and env["CHATTERBOX_ENGINE"] == "simulated"
    cache = service.volume("chatterbox-model-cache")
    assert env["HF_HOME"] == f"{cache}/huggingface"
    # Only the pod's own Ray variables: none of this process's.
    assert {k for k in env if k.startswith("RAY_")} == {
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH",
        "RAY_USAGE_STATS_ENABLED",
    }
    no_secret = LocalRayService({})
    try:
        with pytest.raises(KeyError):
            no_secret._env(no_secret.groups[HEAD])
    finally:
        no_secret.stop()


def test_serve_config_is_the_manifests_with_single_host_changes(service: LocalRayService) -> None:
    config = service.single_host_config({"MAX_CHUNK_LENGTH": 60})
    assert config["proxy_location"] == "HeadOnly"
    assert config["http_options"]["port"] == service.http_port
    (app,) = config["applications"]
    assert app["import_path"] == service.serve_config["applications"][0]["import_path"]
    settings = app["args"]["settings"]
    assert settings == {
        "VOICE_LIBRARY_DIR": str(service.volume("chatterbox-voices")),
        "MAX_CHUNK_LENGTH": 60,
    }
    model = app["args"]["deployments"]["SpeechModelDeployment"]["ray_actor_options"]
    assert model == {"num_cpus": 0, "num_gpus": 1}
