"""The voice routes in-process (FastAPI over httpx's ASGI transport, simulated engine)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from chatterbox_serve.config import load_settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.voices.library import build_voice_library
from deployments.ingress import build_api
from tests.conftest import probe
from tests.local_backend import LocalBackend
from tests.voice_audio import NOT_AUDIO, corrupt, encode, sample, truncated

FAST = {"CHATTERBOX_SIM_BASE_S": 0, "CHATTERBOX_SIM_PER_ITEM_S": 0, "CHATTERBOX_SIM_PER_CHAR_S": 0}


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings({}, None, {**FAST, "VOICE_LIBRARY_DIR": str(tmp_path / "voices")})
    backend = LocalBackend(settings, SimulatedEngine(settings.simulated))
    app = build_api(settings, backend, "simulated", build_voice_library(settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def upload(
    c: httpx.AsyncClient, name: str, data: bytes, path: str = "/voices", **fields: str
) -> httpx.Response:
    return await c.post(
        path,
        data={"voice_name": name, **fields},
        files={"voice_file": ("sample.mp3", data, "audio/mpeg")},
    )


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code


async def test_static_paths_are_not_shadowed_by_names(client):
    for prefix in ("/voices", "/voice-library", "/v1/voices", "/v1/voice-library"):
        r = await client.get(f"{prefix}/all-names")
        assert r.json() == {"names": [], "voice_names": [], "count": 0}
        assert (await client.get(f"{prefix}/default")).json()["default_voice"] is None


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("ok", corrupt, 400, "invalid_audio"),
        ("ok", truncated, 400, "invalid_audio"),
        ("ok", lambda: NOT_AUDIO, 400, "invalid_audio"),
        ("ok", lambda: b"\0" * (10 * 1_048_576 + 10), 413, None),
        ("ok", lambda: encode(0.3), 400, "audio_too_short"),
        ("ok", lambda: encode(180), 400, "audio_too_long"),
        ("ok", lambda: encode(5, amplitude=0), 400, "audio_silent"),
        ("../x", lambda: sample(0), 400, "invalid_name"),
        ("a/b", lambda: sample(0), 400, "invalid_name"),
        ("a\\b", lambda: sample(0), 400, "invalid_name"),
        ("a\x00b", lambda: sample(0), 400, "invalid_name"),
        ("x" * 101, lambda: sample(0), 400, "invalid_name"),
        ("default", lambda: sample(0), 400, "reserved_name"),
        ("all-names", lambda: sample(0), 400, "reserved_name"),
    ],
)
async def test_bad_uploads_get_the_envelope_and_store_nothing(client, name, data, status, code):
    assert_error(await upload(client, name, data()), status, code)
    assert (await client.get("/voices")).json() == {"voices": [], "count": 0}


async def test_missing_fields_and_bad_language_are_400(client):
    r = await client.post("/voices", data={"voice_name": "v"})
    assert_error(r, 400)
    assert r.json()["error"]["param"] == "voice_file"
    assert_error(await upload(client, "v", sample(0), language="xx"), 400, "unsupported_language")


async def test_crud_aliases_and_default(client):
    r = await upload(client, "my-voice", sample(0), language="fr")
    assert r.status_code == 201 and r.json()["voice"]["language"] == "fr"
    assert_error(await upload(client, "my-voice", sample(1)), 409, "voice_exists")
    assert (await client.get("/v1/voices/my-voice")).json()["name"] == "my-voice"
    download = await client.get("/voice-library/my-voice/download")
    assert download.content == sample(0) and download.headers["content-type"] == "audio/mpeg"
    assert download.headers["x-content-type-options"] == "nosniff"
    r = await client.post("/voices/my-voice/aliases", data={"alias": "mv"})
    assert r.status_code == 201 and r.json()["voice"]["aliases"] == ["mv"]
    assert_error(await client.post("/voices/my-voice/aliases", data={"alias": "my-voice"}), 409)
    assert (await client.get("/voices/mv/aliases")).json() == {
        "name": "my-voice",
        "voice_name": "my-voice",
        "aliases": ["mv"],
        "count": 1,
    }
    assert (await client.post("/voices/default", data={"voice_name": "mv"})).status_code == 200
    r = await client.put("/voices/my-voice", data={"new_name": "renamed"})
    assert r.status_code == 200 and r.json()["voice"]["name"] == "renamed"
    assert (await client.get("/voices/default")).json()["default_voice"] == "renamed"
    assert (await client.get("/voices/all-names")).json()["names"] == ["mv", "renamed"]
    assert_error(await client.get("/voices/my-voice"), 404, "voice_not_found")
    assert (await client.delete("/voices/renamed/aliases/mv")).status_code == 200
    assert (await client.delete("/voices/default")).json()["default_voice"] is None
    assert (await client.delete("/voices/renamed")).status_code == 200
    assert_error(await client.delete("/voices/renamed"), 404)
    assert_error(await client.put("/voices/renamed", data={"new_name": "x"}), 404)


async def test_reserved_names_cannot_be_taken_by_rename_or_alias(client):
    await upload(client, "keeper", sample(0))
    for name in ("default", "all-names"):
        r = await client.put("/voices/keeper", data={"new_name": name})
        assert_error(r, 400, "reserved_name")
        r = await client.post("/voices/keeper/aliases", data={"alias": name})
        assert_error(r, 400, "reserved_name")
        r = await client.post(
            "/v1/audio/voices",
            data={"name": name},
            files={"audio_sample": ("a.mp3", sample(1), "audio/mpeg")},
        )
        assert_error(r, 400, "reserved_name")
    assert (await client.get("/voices/all-names")).json()["names"] == ["keeper"]
    assert (await client.get("/voices/keeper")).json()["aliases"] == []


async def test_openai_voice_shapes(client):
    r = await client.post(
        "/v1/audio/voices",
        data={"name": "oa", "consent": "yes"},
        files={"audio_sample": ("a.wav", encode(2), "audio/wav")},
    )
    assert r.status_code == 201
    body = r.json()
    assert body["object"] == "audio.voice" and body["name"] == "oa"
    assert body["id"].startswith("voice_") and isinstance(body["created_at"], int)
    listed = (await client.get("/v1/audio/voices")).json()
    assert listed == {"voices": [{"id": body["id"], "name": "oa"}]}
    r = await client.post(
        "/v1/audio/voices",
        data={"name": "oa"},
        files={"audio_sample": ("a.wav", encode(2), "audio/wav")},
    )
    assert_error(r, 409)
    assert r.json()["error"]["param"] == "name"


async def speak(c: httpx.AsyncClient, voice: object, **extra: object) -> bytes:
    r = await c.post(
        "/v1/audio/speech",
        json={"input": "Bonjour.", "voice": voice, "response_format": "wav", **extra},
    )
    assert r.status_code == 200, r.text
    return r.content


async def test_speech_uses_the_stored_voice_audio_and_language(client):
    voice_id = (await upload(client, "fr-voice", sample(0), language="fr")).json()["voice"]["id"]
    await client.post("/voices/fr-voice/aliases", data={"alias": "fv"})
    await upload(client, "other", sample(1))
    by_name = await speak(client, "fr-voice")
    assert by_name == await speak(client, "fv") == await speak(client, {"id": voice_id})
    assert by_name == await speak(client, "fr-voice", language="fr")  # its language is fr
    assert by_name != await speak(client, "fr-voice", language="en")
    assert by_name != await speak(client, "other", language="fr")
    assert by_name != await speak(client, None, language="fr")
    assert_error(await client.post("/v1/audio/speech", json={"input": "x", "voice": "nope"}), 404)


async def test_one_off_voice_upload(client):
    stored = (await upload(client, "stored", sample(2))).json()["voice"]["id"]
    fields = {"input": "Bonjour.", "response_format": "wav"}
    files = {"voice_file": ("v.mp3", sample(2), "audio/mpeg")}
    one_off = await client.post("/v1/audio/speech/upload", data=fields, files=files)
    assert one_off.status_code == 200, one_off.text
    assert one_off.content == await speak(client, {"id": stored}, language="en")
    plain = await client.post("/v1/audio/speech/upload", data=fields)
    assert plain.status_code == 200 and plain.content != one_off.content
    streamed = await client.post(
        "/v1/audio/speech/stream/upload", data={**fields, "response_format": "mp3"}, files=files
    )
    assert streamed.status_code == 200 and probe(streamed.content)["duration_s"] > 0.3
    assert (await client.get("/voices")).json()["count"] == 1  # nothing stored
    bad = await client.post(
        "/v1/audio/speech/upload",
        data=fields,
        files={"voice_file": ("v.wav", encode(0.3), "audio/wav")},
    )
    assert_error(bad, 400, "audio_too_short")
    r = await client.post("/v1/audio/speech/upload", data={"input": "x", "speed": "9"})
    assert_error(r, 400)
    assert r.json()["error"]["param"] == "speed"


@pytest.mark.parametrize("path", ["/v1/audio/speech/upload", "/v1/audio/speech/stream/upload"])
async def test_a_voice_file_sent_as_text_is_a_400_not_the_default_voice(client, path):
    # `curl -F voice_file=sample.mp3`, without the `@`, sends the name as a text field.
    fields = {"input": "Bonjour.", "voice_file": "sample.mp3"}
    r = await client.post(path, files=[(k, (None, v)) for k, v in fields.items()])
    assert_error(r, 400, "invalid_value")
    assert r.json()["error"]["param"] == "voice_file"
    assert "@" in r.json()["error"]["message"]


async def test_a_library_upload_sent_as_text_says_a_file_part_is_needed(client):
    fields = {"voice_name": "mine", "voice_file": "sample.mp3"}
    r = await client.post("/voices", files=[(k, (None, v)) for k, v in fields.items()])
    assert_error(r, 400, "invalid_value")
    error = r.json()["error"]
    assert error["param"] == "voice_file" and "file part" in error["message"]
    assert "UploadFile" not in error["message"]


async def test_a_name_cannot_take_over_a_voice_id(client):
    voice_id = (await upload(client, "victim", sample(0))).json()["voice"]["id"]
    for name in (voice_id, voice_id.upper(), "voice_abc123"):
        assert_error(await upload(client, name, sample(1)), 400, "reserved_name")
    assert_error(await upload(client, "victim-2", sample(1), path="/v1/audio/voices"), 400)
    victim = await speak(client, {"id": voice_id})
    assert victim == await speak(client, "victim")
    # {"id": ...} matches ids only: a name, even an existing one, is not an id.
    r = await client.post("/v1/audio/speech", json={"input": "x", "voice": {"id": "victim"}})
    assert_error(r, 404, "voice_not_found")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"input": "bad \ud800 text"}, 400),
        ({"input": "hi", "voice": "v\udfff"}, 400),
        ({"input": "hi", "voice": "x" * 5000}, 400),
        ({"input": "hi", "voice": "x" * 256}, 404),
        ({"input": "hi", "voice": {"id": "voice_" + "a" * 250}}, 404),
    ],
    ids=["surrogate-input", "surrogate-voice", "voice-5000", "voice-256", "id-256"],
)
async def test_hostile_voice_and_input_strings_get_a_4xx(client, body, status):
    # httpx cannot encode lone surrogates; send them as JSON escapes, as a client may.
    import json as _json

    r = await client.post(
        "/v1/audio/speech",
        content=_json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    assert_error(r, status)
    # The envelope names the field, in our words rather than pydantic's ("Value error, ...").
    error = r.json()["error"]
    assert error["param"] == next(iter(body.keys() - {"input"}), "input")
    assert error["message"].startswith(("'", "Voice"))
