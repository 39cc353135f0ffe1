"""The RayService deployed as KubeRay deploys it: nodes lost, an upgrade applied, metrics read.

One cluster for the module (tools/cluster.py): the head (no CPUs), one `gpu-workers` pod
(a GPU, no CPUs) and one `cpu-workers` pod (4 CPUs), each started by the `ray start`
command KubeRay builds from `k8s/rayservice.yaml`, and the manifest's `serveConfigV2`
PUT to the head's dashboard. The simulated engine costs 0.2 s per call, chunks hold at
most 60 characters and a job's lease lapses after 3 s. The tests run in order and build
on each other: the voice uploaded early is the one the clients speak with while the app
upgrades and while nodes die, so every new ingress replica must find it on the volume.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatterbox_serve.jobs import JobStore
from chatterbox_serve.jobs.storage import LocalJobBlobStore
from tests.cluster.conftest import AUTH, start_service
from tests.cluster.traffic import Traffic
from tests.conftest import probe
from tests.voice_audio import sample
from tools.cluster import APP, HEAD, LocalRayService, Node, ray_start_args

SETTINGS: dict[str, Any] = {
    "CHATTERBOX_SIM_BASE_S": 0.2,
    "MAX_CHUNK_LENGTH": 60,
    "MAX_TOTAL_LENGTH": 200,  # longer texts are long-text jobs
    "CHATTERBOX_JOB_LEASE_S": 3,
    "CHATTERBOX_JOB_POLL_S": 0.3,
}
GPU, CPU = "gpu-workers", "cpu-workers"
MODEL = "SpeechModelDeployment"
CPU_DEPLOYMENTS = {"SpeechIngress", "TextAudioDeployment", "JobWorkerDeployment"}
VOICES = "chatterbox-voices"  # the voice library's PersistentVolumeClaim
VOICE = "narrator"
SPEECH = {
    "input": "The cluster keeps talking. Nodes come and go.",
    "voice": VOICE,
    "response_format": "wav",
}
LONG = "/v1/audio/speech/long"
RECOVERY_S = 60


@pytest.fixture(scope="module")
def service() -> Iterator[LocalRayService]:
    yield from start_service(SETTINGS)


@pytest.fixture(scope="module")
def client(service: LocalRayService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, headers=AUTH, timeout=60) as c:
        yield c


def node_of(service: LocalRayService, group: str) -> Node:
    (node,) = [n for n in service.nodes if n.group == group]
    return node


def placement(service: LocalRayService) -> dict[str, set[str]]:
    """The nodes of each deployment's RUNNING replicas, from the dashboard."""
    deployments = service.applications()["applications"][APP]["deployments"]
    return {
        name: {r["node_id"] for r in d["replicas"] if r["state"] == "RUNNING"}
        for name, d in deployments.items()
    }


def settled(service: LocalRayService) -> bool:
    """RUNNING, and each deployment at exactly one RUNNING replica (old ones gone)."""
    app = service.applications()["applications"].get(APP) or {}
    if app.get("status") != "RUNNING":
        return False
    return all(
        [r["state"] for r in d["replicas"]] == ["RUNNING"] for d in app["deployments"].values()
    )


def text(sentences: int) -> str:
    return " ".join(f"Sentence {i} of a long story, told slowly." for i in range(sentences))


def job_store(service: LocalRayService) -> JobStore:
    # Jobs live beside the voice library (JOBS_URL unset): on the same volume.
    return JobStore(LocalJobBlobStore(str(service.volume(VOICES))))


def start_job(service: LocalRayService, client: httpx.Client, sentences: int) -> dict[str, Any]:
    """Create a job and wait until it has committed three chunks, but not all."""
    r = client.post(LONG, json={"input": text(sentences), "response_format": "wav"})
    assert r.status_code == 200, r.text
    job = dict(r.json())
    store, deadline = job_store(service), time.monotonic() + 30
    while (record := store.get(job["job_id"])) is None or record.completed_chunks < 3:
        assert time.monotonic() < deadline, "the job committed no chunks in 30 s"
        time.sleep(0.1)
    assert record.completed_chunks < job["total_chunks"]
    return job


def assert_job_complete_once(service: LocalRayService, client: httpx.Client, job: dict[str, Any]):
    """The job completes, each chunk committed and stored once, the file holding each once."""
    job_id, deadline = job["job_id"], time.monotonic() + 120
    while (status := client.get(f"{LONG}/{job_id}").json()["status"]) not in {
        "completed",
        "failed",
    }:
        assert time.monotonic() < deadline, f"job stuck in {status}"
        time.sleep(0.3)
    assert status == "completed"
    store = job_store(service)
    commits = store.commits(job_id, 0)
    assert sorted(commits) == list(range(job["total_chunks"]))
    stored = [k for k in store.blobs.list(f"jobs/{job_id}/g0/") if k.endswith(".wav")]
    assert sorted(stored) == sorted(c.audio_key for c in commits.values())
    audio = client.get(f"{LONG}/{job_id}/download")
    expected = sum(c.duration_s for c in commits.values()) - 0.025 * (len(commits) - 1)
    assert probe(audio.content)["duration_s"] == pytest.approx(expected, abs=0.05)


def speech_duration(client: httpx.Client) -> float:
    r = client.post("/v1/audio/speech", json=SPEECH)
    assert r.status_code == 200, r.text
    return float(probe(r.content)["duration_s"])  # type: ignore[arg-type]


def test_pods_offer_ray_the_manifests_resources(service: LocalRayService) -> None:
    alive = {
        n["node_id"]: n["resources_total"] for n in service.ray_nodes() if n["state"] == "ALIVE"
    }
    assert len(alive) == len(service.nodes) == 3
    for node in service.nodes:
        wanted = ray_start_args(service.groups[node.group])  # limits, then rayStartParams
        offered = alive[node.node_id]
        assert offered.get("CPU", 0) == float(wanted["num-cpus"]), node.group
        assert offered.get("GPU", 0) == float(wanted.get("num-gpus", 0)), node.group
        assert offered["memory"] == float(wanted["memory"]), node.group
    # What the placement below relies on: only the CPU pod offers CPUs, only the GPU pod GPUs.
    assert {n.group for n in service.nodes if alive[n.node_id].get("CPU")} == {CPU}
    assert {n.group for n in service.nodes if alive[n.node_id].get("GPU")} == {GPU}


def test_dashboard_shows_the_deployments_where_the_manifest_puts_them(
    service: LocalRayService,
) -> None:
    details = service.applications()
    app = details["applications"][APP]
    assert app["status"] == "RUNNING"
    assert {n: d["status"] for n, d in app["deployments"].items()} == {
        n: "HEALTHY" for n in CPU_DEPLOYMENTS | {MODEL}
    }
    gpu, cpu = node_of(service, GPU).node_id, node_of(service, CPU).node_id
    assert placement(service) == {MODEL: {gpu}, **{n: {cpu} for n in CPU_DEPLOYMENTS}}
    assert set(details["proxies"]) == {node_of(service, HEAD).node_id}
    page = httpx.get(service.dashboard_url + "/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_speech_through_the_head_proxy(service: LocalRayService, client: httpx.Client) -> None:
    r = client.post(
        "/v1/audio/speech", json={"input": "Hello from KubeRay.", "response_format": "wav"}
    )
    assert r.status_code == 200, r.text
    assert probe(r.content)["duration_s"] > 0.5
    anonymous = httpx.post(f"{service.base_url}/v1/audio/speech", json={"input": "Hi."}, timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"]
    config = client.get("/config").json()
    assert config["engine"] == "simulated"
    assert config["settings"]["VOICE_LIBRARY_DIR"] == str(service.volume(VOICES))


def test_voice_upload_is_stored_on_the_shared_volume(
    service: LocalRayService, client: httpx.Client
) -> None:
    r = client.post(
        "/voices",
        data={"voice_name": VOICE, "language": "en"},
        files={"voice_file": ("sample.mp3", sample(0), "audio/mpeg")},
    )
    assert r.status_code == 201, r.text
    volume = service.volume(VOICES)
    assert [p for p in volume.rglob("*") if p.is_file() and p.read_bytes() == sample(0)]
    assert speech_duration(client) > 1.0


def test_long_job(service: LocalRayService, client: httpx.Client) -> None:
    assert_job_complete_once(service, client, start_job(service, client, 30))


def test_every_node_exports_the_services_metrics(
    service: LocalRayService, client: httpx.Client
) -> None:
    # Who exports what: the proxy on the head, the model on the GPU pod, the ingress on
    # the CPU pod. Ray's metrics agents report every 10 s or so.
    wanted = {
        HEAD: "ray_serve_num_http_requests_total",
        GPU: "ray_chatterbox_engine_batch_size_count",
        CPU: "ray_chatterbox_requests_total",
    }
    deadline = time.monotonic() + 45
    while True:
        found = {}
        for group in wanted:
            body = httpx.get(node_of(service, group).metrics_url, timeout=10).text
            found[group] = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
        if all(name in found[g] for g, name in wanted.items()):
            break
        assert time.monotonic() < deadline, {g: wanted[g] in found[g] for g in wanted}
        speech_duration(client)
        time.sleep(2)
    assert "ray_chatterbox_requests_total" not in found[GPU] | found[HEAD]
    assert "ray_chatterbox_engine_batch_size_count" not in found[CPU] | found[HEAD]


def test_in_place_upgrade_fails_no_request(
    service: LocalRayService, client: httpx.Client, figures: dict[str, Any]
) -> None:
    job = start_job(service, client, 80)
    with Traffic(service.base_url, AUTH, SPEECH, speech_duration(client)) as traffic:
        traffic.wait_for_successes(4, after=0)
        started = time.monotonic()
        service.submit(service.single_host_config({**SETTINGS, "CHATTERBOX_SIM_BASE_S": 0.1}))
        while client.get("/config").json()["settings"]["CHATTERBOX_SIM_BASE_S"] != 0.1 or (
            not settled(service)
        ):
            assert time.monotonic() - started < 120, "the upgrade did not finish in 120 s"
            time.sleep(0.5)
        upgrade_s = time.monotonic() - started
        traffic.wait_for_successes(4, after=time.monotonic())
    seen = traffic.summary(since=started - 5)
    figures["upgrade"] = {**seen, "upgrade_s": round(upgrade_s, 1)}
    assert seen["requests"] > 0 and seen["unclean"] == [] and seen["gave_up"] == 0
    assert seen["failed_attempts"] == 0, seen
    assert_job_complete_once(service, client, job)


@pytest.mark.parametrize("group", [CPU, GPU])
def test_a_worker_node_lost_mid_request_and_mid_job(
    service: LocalRayService, client: httpx.Client, figures: dict[str, Any], group: str
) -> None:
    job = start_job(service, client, 80)
    moved = {MODEL} if group == GPU else CPU_DEPLOYMENTS
    with Traffic(service.base_url, AUTH, SPEECH, speech_duration(client)) as traffic:
        traffic.wait_for_successes(4, after=0)
        in_flight = traffic.in_flight()
        killed = time.monotonic()
        service.kill_node(node_of(service, group))
        # KubeRay starts a new pod in place of the lost one.
        replacement = service.add_node(group)
        joined_s = time.monotonic() - killed
        while True:
            try:
                healthy = client.get("/health").status_code == 200 and settled(service)
            except httpx.HTTPError:
                healthy = False
            if healthy:
                break
            assert time.monotonic() - killed < RECOVERY_S, "not healthy again in 60 s"
            time.sleep(0.5)
        recovered = time.monotonic()
        traffic.wait_for_successes(4, after=recovered)
    recovered_s = recovered - killed
    seen = traffic.summary(since=killed - 5)
    figures[f"lost {group}"] = {
        **seen,
        "in_flight_at_kill": in_flight,
        "node_joined_s": round(joined_s, 1),
        "recovered_s": round(recovered_s, 1),
    }
    assert in_flight > 0 and seen["unclean"] == [] and seen["gave_up"] == 0, seen
    assert traffic.failures_after(recovered) == []
    assert {n: placement(service)[n] for n in moved} == {n: {replacement.node_id} for n in moved}
    assert_job_complete_once(service, client, job)
    listed = client.get("/v1/voices").json()["voices"]
    assert VOICE in {v["name"] for v in listed}
