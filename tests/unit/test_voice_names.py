"""Voice names are one name whatever their case or Unicode normalisation.

`Café`, `café` and `cafe` + combining accent are the same voice name: a second upload
gets the usual 409, lookups find the voice in any case, and the voice keeps the
spelling it was given. Claims stored before this rule (under the exact name) stay
readable and still block case variants.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from chatterbox_serve.config import load_settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import ConflictError
from chatterbox_serve.voices.library import VoiceLibrary, build_voice_library, fold_name
from chatterbox_serve.voices.store import LocalVoiceStore
from deployments.ingress import build_api
from tests.local_backend import LocalBackend
from tests.voice_audio import sample

NFC, NFD, UPPER = "Caf\u00e9", "Cafe\u0301", "CAF\u00c9"


@pytest.fixture
def library(tmp_path) -> VoiceLibrary:
    return VoiceLibrary(LocalVoiceStore(tmp_path / "voices"))


def _legacy_claim(library: VoiceLibrary, name: str, voice_id: str) -> None:
    """A name claim as the library wrote it before names were caseless."""
    body = {"name": name, "voice_id": voice_id, "kind": "name", "created": time.time()}
    body["token"] = uuid.uuid4().hex
    key = f"names/{hashlib.sha256(name.encode()).hexdigest()}.json"
    library.store.create(key, json.dumps(body).encode())


def test_case_and_normalisation_variants_are_one_name(library):
    library.add_voice(NFC, sample(0))
    for variant in ("caf\u00e9", NFD, UPPER, "cafe\u0301"):
        with pytest.raises(ConflictError) as info:
            library.add_voice(variant, sample(1))
        assert info.value.code == "voice_exists"
        assert library.find(variant).prompt.audio == sample(0)
    assert [e.name for e in library.list_voices()] == [NFC]
    assert library.store.list("voices/") and len(library.list_voices()) == 1
    assert fold_name("Stra\u00dfe") == fold_name("STRASSE")


def test_an_alias_may_not_take_a_variant_of_any_name(library):
    library.add_voice("Alice", sample(0))
    library.add_voice("Bob", sample(1))
    with pytest.raises(ConflictError):
        library.add_alias("Bob", "ALICE")
    library.add_alias("Bob", "Bobby")
    with pytest.raises(ConflictError):
        library.add_voice("bobby", sample(2))
    assert library.remove_alias("bob", "BOBBY").aliases == ()


def test_a_rename_may_change_only_the_case(library):
    library.add_voice("alice", sample(0))
    library.add_voice("Carol", sample(1))
    assert library.rename("ALICE", "Alice").name == "Alice"
    assert library.get_voice("alice").name == "Alice"
    assert library.find("ALICE").prompt.audio == sample(0)
    with pytest.raises(ConflictError):
        library.rename("Alice", "CAROL")
    assert sorted(e.name for e in library.list_voices()) == ["Alice", "Carol"]


def test_claims_stored_before_the_rule_still_resolve_and_block_variants(library):
    stored = library.add_voice("tmp-name", sample(0))
    voice_id = stored.record.id
    library.store.delete(f"names/{hashlib.sha256(b'tmp-name').hexdigest()}.json")
    _legacy_claim(library, "OldVoice", voice_id)

    assert library.find("OldVoice").prompt.audio == sample(0)
    assert library.get_voice("OldVoice").name == "OldVoice"
    with pytest.raises(ConflictError):
        library.add_voice("oldvoice", sample(1))
    # A rename moves the old claim to the caseless one; then any case finds it.
    library.rename("OldVoice", "Oldvoice")
    assert library.find("OLDVOICE").prompt.audio == sample(0)
    assert [e.name for e in library.list_voices()] == ["Oldvoice"]
    library.delete("oldVOICE")
    assert library.store.list("names/") == [] and library.list_voices() == []


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    overrides = {"CHATTERBOX_SIM_BASE_S": 0, "VOICE_LIBRARY_DIR": str(tmp_path / "voices")}
    settings = load_settings({}, None, overrides)
    backend = LocalBackend(settings, SimulatedEngine(settings.simulated))
    app = build_api(settings, backend, "simulated", build_voice_library(settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_uploading_a_case_variant_over_http_is_the_duplicate_409(client, tmp_path):
    def files() -> dict[str, tuple[str, bytes, str]]:
        return {"voice_file": ("v.mp3", sample(0), "audio/mpeg")}

    first = await client.post("/voices", data={"voice_name": NFC}, files=files())
    assert first.status_code == 201, first.text
    stored = sorted(p.name for p in (tmp_path / "voices").rglob("*") if p.is_file())
    for variant in (NFD, "caf\u00e9"):
        r = await client.post("/voices", data={"voice_name": variant}, files=files())
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "voice_exists"
    assert sorted(p.name for p in (tmp_path / "voices").rglob("*") if p.is_file()) == stored
    listed = (await client.get("/voices")).json()
    assert [v["name"] for v in listed["voices"]] == [NFC]
