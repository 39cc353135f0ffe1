"""Voices across tenants: owned by the key that uploaded them, shared when an operator did.

Any key once could download, rename, delete or replace another tenant's voice and
change the default, and queued jobs resolved voices by name when they ran.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.jobs import JobsAccess, JobService, JobStore
from chatterbox_serve.jobs.storage import LocalJobBlobStore
from chatterbox_serve.voices import resolve_voice
from chatterbox_serve.voices.library import VoiceLibrary
from chatterbox_serve.voices.store import LocalVoiceStore
from deployments.ingress import build_api
from tests.component.conftest import make_settings
from tests.local_backend import LocalBackend
from tests.voice_audio import sample

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
OPS = {"Authorization": "Bearer ops-key"}
TEXT = " ".join(f"Sentence {i} of a story that goes on." for i in range(40))


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    return VoiceLibrary(LocalVoiceStore(tmp_path / "voices"))


@pytest.fixture
async def client(tmp_path: Path, library: VoiceLibrary) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        API_KEYS="key-a,key-b", ADMIN_API_KEYS="ops-key", MAX_TOTAL_LENGTH="300"
    )
    store = JobStore(LocalJobBlobStore(tmp_path / "jobs"))
    access = JobsAccess(JobService(store, settings), keys_enabled=True)
    engine = SimulatedEngine(settings.simulated)
    app = build_api(
        settings, LocalBackend(settings, engine), "simulated", voices=library, jobs=access
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def _upload(c: httpx.AsyncClient, name: str, headers: dict[str, str], n: int) -> str:
    r = await c.post(
        "/voices",
        data={"voice_name": name},
        files={"voice_file": ("v.wav", sample(n))},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["voice"]["id"])


async def test_another_tenants_voice_is_invisible_and_untouchable(
    client: httpx.AsyncClient,
) -> None:
    await _upload(client, "narrator", A, 0)
    names = (await client.get("/voices/all-names", headers=B)).json()["names"]
    assert "narrator" not in names
    for method, path, kw in [
        ("GET", "/voices/narrator", {}),
        ("GET", "/voices/narrator/download", {}),
        ("PUT", "/voices/narrator", {"data": {"new_name": "mine"}}),
        ("DELETE", "/voices/narrator", {}),
        ("POST", "/voices/narrator/aliases", {"data": {"alias": "x"}}),
    ]:
        r = await client.request(method, path, headers=B, **kw)
        assert r.status_code == 404, (method, path, r.text)
    speech = await client.post(
        "/v1/audio/speech", json={"input": "Hi.", "voice": "narrator"}, headers=B
    )
    assert speech.status_code == 404
    job = await client.post(LONG, json={"input": TEXT, "voice": "narrator"}, headers=B)
    assert job.status_code == 404
    # Its owner still has it all.
    assert (await client.get("/voices/narrator/download", headers=A)).content == sample(0)
    mine = await client.post(
        "/v1/audio/speech", json={"input": "Hi.", "voice": "narrator"}, headers=A
    )
    assert mine.status_code == 200


async def test_shared_voices_are_readable_by_all_and_changed_by_operators_only(
    client: httpx.AsyncClient,
) -> None:
    await _upload(client, "house", OPS, 1)
    assert "house" in (await client.get("/voices/all-names", headers=B)).json()["names"]
    speech = await client.post(
        "/v1/audio/speech", json={"input": "Hi.", "voice": "house"}, headers=B
    )
    assert speech.status_code == 200
    renamed = await client.put("/voices/house", data={"new_name": "mine"}, headers=B)
    assert renamed.status_code == 403 and renamed.json()["error"]["code"] == "operator_only"
    assert (await client.delete("/voices/house", headers=A)).status_code == 403
    default = await client.post("/voices/default", data={"voice_name": "house"}, headers=A)
    assert default.status_code == 403
    assert (await client.delete("/voices/default", headers=B)).status_code == 403
    by_ops = await client.post("/voices/default", data={"voice_name": "house"}, headers=OPS)
    assert by_ops.status_code == 200


async def test_a_job_keeps_the_voice_content_it_was_created_with(
    client: httpx.AsyncClient, library: VoiceLibrary
) -> None:
    first = await _upload(client, "narrator", A, 0)
    job = await client.post(LONG, json={"input": TEXT, "voice": "narrator"}, headers=A)
    assert job.status_code == 200, job.text
    job_id = job.json()["job_id"]
    # The name now points at other audio: renamed away, and a new upload under it.
    assert (await client.put("/voices/narrator", data={"new_name": "old"}, headers=A)).is_success
    await _upload(client, "narrator", A, 1)
    params = (await client.get(f"{LONG}/{job_id}", headers=A)).json()["metadata"]["parameters"]
    assert params["voice_id"] == first
    # What the job runner resolves (`voice_id or voice`): the content of creation time.
    resolved = resolve_voice(params["voice_id"] or params["voice"], library)
    assert resolved.prompt is not None and resolved.prompt.audio == sample(0)


LONG = "/v1/audio/speech/long"
