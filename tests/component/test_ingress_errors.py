"""Every bad input gets the OpenAI error envelope with the right status, before any work."""

from __future__ import annotations

import pytest


def assert_envelope(r, status, param=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": "   "}, "input"),
        ({"input": "x" * 601}, "input"),
        ({"input": 5}, "input"),
        ({"input": "hi", "speed": 0.1}, "speed"),
        ({"input": "hi", "speed": 4.5}, "speed"),
        ({"input": "hi", "response_format": "ogg"}, "response_format"),
        ({"input": "hi", "stream_format": "video"}, "stream_format"),
        ({"input": "hi", "exaggeration": 2.5}, "exaggeration"),
        ({"input": "hi", "cfg_weight": -0.1}, "cfg_weight"),
        ({"input": "hi", "temperature": 0.01}, "temperature"),
        ({"input": "hi", "language": "tlh"}, "language"),
        ({"input": "hi", "instructions": "z" * 4097}, "instructions"),
        ({"input": "hi", "voice": {"name": "x"}}, "voice"),
        # JSON booleans are not numbers (pydantic's lax mode would read true as 1).
        ({"input": "hi", "speed": True}, "speed"),
        ({"input": "hi", "exaggeration": True}, "exaggeration"),
        ({"input": "hi", "seed": False}, "seed"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(client, body, param):
    r = await client.post("/v1/audio/speech", json=body)
    err = assert_envelope(r, 400, param)
    assert err["type"] == "invalid_request_error"
    assert "Value error" not in err["message"]


async def test_a_boolean_speed_is_named_in_the_message(client):
    r = await client.post("/v1/audio/speech", json={"input": "hi", "speed": True})
    err = assert_envelope(r, 400, "speed")
    assert err["message"] == "Invalid value for 'speed': Input should be a number, not a boolean."


async def test_malformed_json_is_400(client):
    r = await client.post(
        "/v1/audio/speech", content=b'{"input": ', headers={"content-type": "application/json"}
    )
    assert_envelope(r, 400)


@pytest.mark.parametrize(
    "content",
    [b'{"input": "caf\xe9"}', b'{"input": ' + b"[" * 4000 + b"]" * 4000 + b"}"],
    ids=["latin-1", "nested"],
)
async def test_a_body_json_cannot_decode_says_what_to_send(client, content):
    r = await client.post(
        "/v1/audio/speech", content=content, headers={"content-type": "application/json"}
    )
    err = assert_envelope(r, 400)
    assert err["code"] == "invalid_value" and "UTF-8 JSON object" in err["message"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"input=hello", "application/x-www-form-urlencoded"), (b'["hello"]', "application/json")],
)
async def test_a_body_that_is_not_a_json_object_says_so(client, content, content_type):
    r = await client.post(
        "/v1/audio/speech", content=content, headers={"content-type": content_type}
    )
    err = assert_envelope(r, 400)
    assert "JSON object" in err["message"] and "application/json" in err["message"]


async def test_unknown_voice_is_404(client):
    r = await client.post("/v1/audio/speech", json={"input": "hi", "voice": "nobody"})
    assert assert_envelope(r, 404, "voice")["code"] == "voice_not_found"


async def test_openai_voice_name_is_accepted(client):
    r = await client.post("/v1/audio/speech", json={"input": "hi", "voice": "nova"})
    assert r.status_code == 200


async def test_body_over_limit_is_413(client):
    r = await client.post("/v1/audio/speech", json={"input": "x" * 10000})
    assert_envelope(r, 413)


async def test_engine_failure_is_500_with_request_id(client):
    r = await client.post(
        "/v1/audio/speech",
        json={"input": "a <<simulate-engine-failure>>"},
        headers={"X-Request-Id": "req-abc"},
    )
    err = assert_envelope(r, 500)
    assert "req-abc" in err["message"] and err["type"] == "server_error"


async def test_streamed_engine_failure_is_a_json_error_not_a_broken_stream(client):
    r = await client.post(
        "/v1/audio/speech/stream", json={"input": "a <<simulate-engine-failure>>"}
    )
    assert_envelope(r, 500)


async def test_unknown_route_and_wrong_method_use_the_envelope(client):
    assert_envelope(await client.get("/v1/nothing"), 404)
    assert_envelope(await client.get("/v1/audio/speech"), 405)
