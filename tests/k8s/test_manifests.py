"""The KubeRay manifests: schema-valid, generated from serve_config.yaml, and shaped as documented.

RayService objects are checked against the `openAPIV3Schema` of the KubeRay v1.7.0 CRD
(from ../shared), made strict the way the API server's strict field validation is:
an unknown field is an error. Core objects, and the pod templates inside the
RayService, are checked with `kubernetes-validate`'s bundled (offline) schemas.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from chatterbox_serve.config import env_names, load_settings
from deployments.builder import AppArgs, build_app
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.31"
CRD = SHARED / "schemas" / "kuberay" / "ray.io_rayservices.yaml"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                docs.append((f"{path.name}#{i}:{doc['kind']}", doc))
    return docs


DOCUMENTS = _documents()


def _rayservice() -> dict[str, Any]:
    (doc,) = [d for _, d in DOCUMENTS if d["kind"] == "RayService"]
    return doc


def _strict(schema: Any) -> Any:
    """Forbid unknown fields wherever the CRD lists the allowed ones."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_strict(v1["schema"]["openAPIV3Schema"]))


def _errors(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_k8s_directory_has_the_documented_objects() -> None:
    kinds = sorted(d["kind"] for _, d in DOCUMENTS)
    assert kinds == ["PersistentVolumeClaim", "PersistentVolumeClaim", "RayService", "Secret"]


@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=[n for n, _ in DOCUMENTS])
def test_every_manifest_validates(
    name: str, doc: dict[str, Any], crd_validator: jsonschema.Draft7Validator
) -> None:
    if doc["apiVersion"] == "ray.io/v1":
        assert _errors(crd_validator, doc) == []
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_pod_templates_validate_as_core_kubernetes() -> None:
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": group["template"],
        }
        kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)


def test_crd_validation_rejects_typos_and_wrong_types(
    crd_validator: jsonschema.Draft7Validator,
) -> None:
    typo = copy.deepcopy(_rayservice())
    typo["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    assert any("enableInTreeAutoscalling" in e for e in _errors(crd_validator, typo))
    wrong = copy.deepcopy(_rayservice())
    wrong["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    assert any("maxReplicas" in e for e in _errors(crd_validator, wrong))


def _serve_config_v2() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    return config


def _built_model(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The model deployment the builder binds from the manifest's application args."""
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    (app,) = _serve_config_v2()["applications"]
    ingress = build_app({**app["args"], "dotenv_path": None})._bound_deployment
    return ingress.init_args[1]._bound_deployment


def test_serve_config_v2_parses_with_serve_schema() -> None:
    schema = ServeDeploySchema.model_validate(_serve_config_v2())
    (app,) = schema.applications
    assert app.import_path == "deployments.builder:build_app"
    # Options go through the builder's args, never Serve's whole-dict-replacing list.
    assert app.deployments == []


def test_serve_config_v2_model_replica_takes_a_gpu_and_no_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _built_model(monkeypatch)
    assert model.ray_actor_options == {"num_gpus": 1, "num_cpus": 0}


def test_serve_config_v2_args_build_valid_settings() -> None:
    (app,) = _serve_config_v2()["applications"]
    args = AppArgs.model_validate(app["args"])
    assert args.engine == "vllm"
    settings = load_settings({}, None, {"CHATTERBOX_ENGINE": args.engine, **args.settings})
    assert settings.engine.engine == "vllm"


def test_manifest_is_up_to_date_with_serve_config() -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_generator_notices_a_serve_config_change() -> None:
    gen = _generator()
    manifest = (K8S / "rayservice.yaml").read_text()
    serve_config = (ROOT / "serve_config.yaml").read_text()
    assert gen.regenerate(manifest, serve_config) == manifest
    changed = serve_config.replace("settings: {}", "settings: {MAX_CHUNK_LENGTH: 99}", 1)
    assert changed != serve_config
    regenerated = gen.regenerate(manifest, changed)
    assert regenerated != manifest and "MAX_CHUNK_LENGTH: 99" in regenerated
    # Everything outside the block is kept.
    assert regenerated.split("serveConfigV2: |")[0] == manifest.split("serveConfigV2: |")[0]
    assert regenerated.split("  rayClusterConfig:")[1] == manifest.split("  rayClusterConfig:")[1]


def test_kuberay_overlay_changes_only_the_engine_model_placement_and_voices() -> None:
    base = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    generated = _serve_config_v2()
    args = generated["applications"][0]["args"]
    assert args.pop("deployments") == {
        "SpeechModelDeployment": {"ray_actor_options": {"num_cpus": 0}}
    }
    assert args.pop("engine") == "vllm"
    assert args.pop("settings") == {"VOICE_LIBRARY_DIR": "/voices"}
    base_args = base["applications"][0]["args"]
    assert base_args.pop("deployments") == {}
    assert base_args.pop("settings") == {}
    base_args.pop("engine")
    assert generated == base


def _ray_pin() -> str:
    # A regex, not tomllib, which Python 3.10 (still in requires-python) lacks.
    match = re.search(r'"ray\[serve\]==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert match is not None
    return match[1]


def test_ray_version_is_the_pyproject_pin_everywhere() -> None:
    version = _ray_pin()
    assert _rayservice()["spec"]["rayClusterConfig"]["rayVersion"] == version
    dockerfile = (K8S / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:(\S+)$", dockerfile, re.M)[1] == (  # type: ignore[index]
        f"{version}-py311-cu130"
    )
    assert 'pip install --no-cache-dir ".[vllm]"' in dockerfile


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return list(group["template"]["spec"]["containers"])


def test_cluster_shape_head_gpu_and_cpu_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    service = _rayservice()
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert 8265 in {p["containerPort"] for p in _containers(head)[0]["ports"]}
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu, cpu = groups["gpu-workers"], groups["cpu-workers"]
    for group in (gpu, cpu):
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for c in _containers(group):
            assert c["resources"]["requests"] and c["resources"]["limits"]
            assert "readinessProbe" in c
    for key in ("requests", "limits"):
        assert _containers(gpu)[0]["resources"][key]["nvidia.com/gpu"] == 1
        assert "nvidia.com/gpu" not in _containers(cpu)[0]["resources"][key]
    # GPU workers offer Ray no CPUs, so only the model replica (0 CPUs, 1 GPU) fits there.
    assert gpu["rayStartParams"]["num-cpus"] == "0"
    # Serve's model autoscaling cannot ask for more GPU pods than the group allows.
    model = _built_model(monkeypatch)
    assert model._deployment_config.autoscaling_config.max_replicas <= gpu["maxReplicas"]


def test_initializing_timeout_covers_download_and_load() -> None:
    timeout = _rayservice()["metadata"]["annotations"]["ray.io/initializing-timeout"]
    match = re.fullmatch(r"(\d+)([smh])", timeout)
    assert match is not None, timeout
    seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]
    assert 20 * 60 <= seconds <= 2 * 3600


def test_api_keys_model_cache_and_voices_are_wired() -> None:
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    secrets = {d["metadata"]["name"]: d for _, d in DOCUMENTS if d["kind"] == "Secret"}
    claims = {d["metadata"]["name"] for _, d in DOCUMENTS if d["kind"] == "PersistentVolumeClaim"}
    for group in groups:
        for c in _containers(group):
            env = {e["name"]: e for e in c["env"]}
            ref = env["API_KEYS"]["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]]["stringData"]
            assert env["CHATTERBOX_ENGINE"]["value"] == "vllm"
        for volume in group["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    groups_by_name = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu_env = {
        e["name"]: e.get("value") for e in _containers(groups_by_name["gpu-workers"])[0]["env"]
    }
    mounts = {m["mountPath"] for m in _containers(groups_by_name["gpu-workers"])[0]["volumeMounts"]}
    assert any(gpu_env["HF_HOME"].startswith(m) for m in mounts)
    cpu_env = {
        e["name"]: e.get("value") for e in _containers(groups_by_name["cpu-workers"])[0]["env"]
    }
    cpu_mounts = {
        m["mountPath"] for m in _containers(groups_by_name["cpu-workers"])[0]["volumeMounts"]
    }
    settings = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert settings["settings"]["VOICE_LIBRARY_DIR"] in cpu_mounts
    assert "VOICE_LIBRARY_DIR" not in cpu_env


def test_worker_pods_set_no_setting_the_head_lacks() -> None:
    # The app is built (settings read) beside the Serve controller on the head; a setting
    # only in a worker pod's env never takes effect (tests/cluster runs that path).
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    (head,) = _containers(cluster["headGroupSpec"])
    head_env = {e["name"]: e for e in head["env"]}
    known = set(env_names())
    for group in cluster["workerGroupSpecs"]:
        for c in _containers(group):
            for e in c["env"]:
                if e["name"] in known:
                    assert head_env.get(e["name"]) == e, (group["groupName"], e["name"])


def test_every_ray_node_starts_with_the_proxy_middleware() -> None:
    """The ingress refuses a node whose proxy lacks it, so every group's env must set it."""
    from deployments.proxy_errors import CALLBACK_ENV, CALLBACK_PATH

    cluster = _rayservice()["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get(CALLBACK_ENV) == CALLBACK_PATH, container["name"]
    serve_config = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    for app in serve_config["applications"]:
        # runtime_env reaches replicas, not the proxy: there it would only hide a gap.
        assert CALLBACK_ENV not in app.get("runtime_env", {}).get("env_vars", {})
