"""The voice library over real HTTP, with two ingress and two model replicas.

Each ingress replica has its own `VoiceLibrary` (and audio cache) over one shared
library directory, so any staleness between replicas shows up as wrong audio.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from ray import serve

from tests.serve.conftest import ServeApp, start_app
from tests.voice_audio import NOT_AUDIO, encode, sample

TWO = {"autoscaling_config": {"min_replicas": 2, "initial_replicas": 2, "max_replicas": 2}}
FAST = {
    "CHATTERBOX_SIM_BASE_S": 0.01,
    "CHATTERBOX_SIM_PER_ITEM_S": 0,
    "CHATTERBOX_SIM_PER_CHAR_S": 0,
}


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[ServeApp]:
    library = tmp_path_factory.mktemp("voices")
    yield from start_app(
        settings={**FAST, "VOICE_LIBRARY_DIR": str(library)},
        deployments={"SpeechIngress": TWO, "SpeechModelDeployment": TWO},
    )


def upload(c: httpx.Client, name: str, data: bytes, **fields: str) -> httpx.Response:
    return c.post(
        "/voices",
        data={"voice_name": name, **fields},
        files={"voice_file": ("sample.mp3", data, "audio/mpeg")},
    )


def speak(c: httpx.Client, voice: object = None, **extra: object) -> bytes:
    r = c.post(
        "/v1/audio/speech",
        json={"input": "Bonjour tout le monde.", "voice": voice, "response_format": "wav", **extra},
    )
    assert r.status_code == 200, r.text
    return r.content


def speak_with_file(c: httpx.Client, data: bytes, language: str) -> bytes:
    r = c.post(
        "/v1/audio/speech/upload",
        data={"input": "Bonjour tout le monde.", "response_format": "wav", "language": language},
        files={"voice_file": ("v.mp3", data, "audio/mpeg")},
    )
    assert r.status_code == 200, r.text
    return r.content


def test_two_replicas_of_each_deployment_are_running(app):
    status = serve.status().applications["chatterbox"].deployments
    for name in ("SpeechIngress", "SpeechModelDeployment"):
        assert status[name].replica_states.get("RUNNING") == 2, status[name]


def test_crud_and_speech_with_stored_voices(app):
    with app.client() as c:
        r = upload(c, "my-voice", sample(0), language="fr")
        assert r.status_code == 201, r.text
        voice_id = r.json()["voice"]["id"]
        assert c.post("/voices/my-voice/aliases", data={"alias": "mine"}).status_code == 201
        listed = c.get("/v1/voices").json()
        assert listed["count"] == 1 and listed["voices"][0]["aliases"] == ["mine"]
        assert c.get("/voices/my-voice/download").content == sample(0)

        # French without passing a language, from the voice's stored language.
        expected = speak_with_file(c, sample(0), "fr")
        assert speak(c, "my-voice") == expected
        assert speak(c, "mine") == expected
        assert speak(c, {"id": voice_id}) == expected
        assert speak(c, "my-voice", language="en") == speak_with_file(c, sample(0), "en")
        assert expected != speak_with_file(c, sample(1), "fr")

        assert c.put("/voices/my-voice", data={"new_name": "renamed"}).status_code == 200
        assert (
            c.post("/v1/audio/speech", json={"input": "x", "voice": "my-voice"}).status_code == 404
        )
        assert speak(c, "renamed") == expected
        assert c.delete("/voices/renamed").status_code == 200
        r = c.post("/v1/audio/speech", json={"input": "x", "voice": "renamed"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "voice_not_found"
        assert c.get("/voices/all-names").json()["count"] == 0


def test_bad_files_get_openai_errors_over_http(app):
    with app.client() as c:
        for data, status in ((NOT_AUDIO, 400), (encode(0.3), 400), (b"\0" * (11 * 1_048_576), 413)):
            r = upload(c, "bad", data)
            assert r.status_code == status, r.text
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert c.get("/voices").json()["count"] == 0


def test_uploads_replacements_and_deletes_are_never_stale(app):
    expected = {
        i: speak_with_file(httpx.Client(base_url=app.base_url), sample(i), "en") for i in range(3)
    }
    with app.client() as c:
        for round_ in range(8):
            i = round_ % 3
            assert upload(c, "rotating", sample(i)).status_code == 201
            # The very next request, on whichever replica it lands, uses the new audio.
            assert speak(c, "rotating") == expected[i], f"stale voice in round {round_}"
            assert c.post("/voices/default", data={"voice_name": "rotating"}).status_code == 200
            assert speak(c) == expected[i]
            assert c.delete("/voices/rotating").status_code == 200
            assert (
                c.post("/v1/audio/speech", json={"input": "x", "voice": "rotating"}).status_code
                == 404
            )
        assert c.get("/voices/default").json()["default_voice"] is None


def test_twenty_parallel_uploads_of_one_name(app):
    def attempt(i: int) -> int:
        with app.client() as c:
            return upload(c, "contested", sample(i % 3)).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(attempt, range(20)))
    assert sorted(codes) == [201] + [409] * 19
    with app.client() as c:
        assert [v["name"] for v in c.get("/voices").json()["voices"]] == ["contested"]
        assert c.delete("/voices/contested").status_code == 200


def test_openai_voice_endpoints(app):
    with app.client() as c:
        r = c.post(
            "/v1/audio/voices",
            data={"name": "oa-voice", "consent": "ok"},
            files={"audio_sample": ("a.mp3", sample(2), "audio/mpeg")},
        )
        assert r.status_code == 201 and r.json()["object"] == "audio.voice"
        voice = {"id": r.json()["id"], "name": "oa-voice"}
        assert voice in c.get("/v1/audio/voices").json()["voices"]
        assert speak(c, {"id": voice["id"]}) == speak_with_file(c, sample(2), "en")


def test_a_many_chunk_request_speaks_its_voice_in_every_chunk_across_model_replicas(app):
    """Later chunks carry the voice by sha256 only; a model replica that never saw it
    asks for it (VoiceAudioMissingError across Ray) and the chunk is resent whole."""
    text = " ".join(f"Sentence {i} of a request long enough for many chunks." for i in range(45))
    body = {"input": text, "response_format": "wav", "language": "en"}
    voice = encode(3.0, freq=330.0)
    with app.client() as c:
        assert upload(c, "many-chunks", voice).status_code == 201
        stored = [
            c.post("/v1/audio/speech", json={**body, "voice": "many-chunks"}) for _ in range(3)
        ]
        one_off = c.post(
            "/v1/audio/speech/upload",
            data=body,
            files={"voice_file": ("v.wav", voice, "audio/wav")},
        )
        builtin = c.post("/v1/audio/speech", json=body)
    assert all(r.status_code == 200 for r in (*stored, one_off, builtin))
    assert {r.content for r in stored} == {one_off.content}
    assert one_off.content != builtin.content
