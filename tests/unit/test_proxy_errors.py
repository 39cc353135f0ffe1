"""The proxy middleware turns Ray Serve's own plain-text errors into OpenAI envelopes.

The inner apps here stand in for Ray's proxy (a third-party boundary); the same
middleware is checked against the real proxy in tests/serve/test_overload.py.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from deployments.proxy_errors import ProxyErrorEnvelope, proxy_middlewares
from deployments.streams import DeliveryReports


def _plain(status: int, headers: list[tuple[bytes, bytes]] = ()):  # type: ignore[assignment]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *headers],
            }
        )
        await send({"type": "http.response.body", "body": b"internal detail 10.0.0.7"})

    return app


async def _died(scope: Scope, receive: Receive, send: Send) -> None:
    return None  # what the proxy does when the ingress replica dies: no answer at all


async def _call(app) -> httpx.Response:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=ProxyErrorEnvelope(app), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as c:
        return await c.post("/v1/audio/speech", json={"input": "hi"})


def test_callback_returns_starlette_middlewares() -> None:
    # Delivery reports outermost: they count what reaches the client's socket.
    reports, envelope = proxy_middlewares()
    assert isinstance(reports, Middleware) and reports.cls is DeliveryReports
    assert isinstance(envelope, Middleware) and envelope.cls is ProxyErrorEnvelope


@pytest.mark.parametrize(
    ("status", "extra", "code", "retry_after"),
    [
        (503, [(b"x-request-id", b"rid-1")], "overloaded", "1"),
        (503, [(b"retry-after", b"7")], "overloaded", "7"),
        (429, [(b"retry-after", b"3")], "rate_limited", "3"),
        (408, [], "timeout", None),
        (404, [], "not_found", None),
    ],
)
async def test_plain_text_errors_become_envelopes(status, extra, code, retry_after) -> None:
    r = await _call(_plain(status, extra))
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
    assert "10.0.0.7" not in r.text
    assert r.headers.get("retry-after") == retry_after
    if extra and extra[0][0] == b"x-request-id":
        assert "rid-1" in err["message"]


async def test_an_app_that_never_answers_gets_a_500_envelope() -> None:
    async def died_after_tagging(scope: Scope, receive: Receive, send: Send) -> None:
        scope["headers"] = [*scope["headers"], (b"x-request-id", b"rid-9")]  # as Ray's does

    r = await _call(_died)
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    tagged = await _call(died_after_tagging)
    assert "rid-9" in tagged.json()["error"]["message"]
    assert tagged.headers["x-request-id"] == "rid-9"


async def test_app_json_errors_and_audio_pass_through_untouched() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        status = 400 if scope["path"] == "/bad" else 200
        ctype = b"application/json" if status == 400 else b"audio/mpeg"
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]}
        )
        await send(
            {
                "type": "http.response.body",
                "body": b'{"error": 1}' if status == 400 else b"ID3",
                "more_body": True,
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    transport = httpx.ASGITransport(app=ProxyErrorEnvelope(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as c:
        bad, audio = await c.get("/bad"), await c.get("/audio")
    assert (bad.status_code, bad.json()) == (400, {"error": 1})
    assert (audio.status_code, audio.content) == (200, b"ID3")


async def _ray_proxy_like(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the request id as Ray's proxy does (`value.decode()`) and answers with it."""
    ids = [v.decode() for k, v in scope["headers"] if k == b"x-request-id"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": ",".join(ids).encode()})


@pytest.mark.parametrize(
    ("given", "kept"),
    [(b"abc.DEF-1_2", True), (b"r" * 10_000, False), (b"caf\xe9\xff", False), (b"a b", False)],
)
async def test_only_well_formed_request_ids_reach_rays_proxy(given: bytes, kept: bool) -> None:
    from ray.serve._private.http_util import RequestIdMiddleware

    app = ProxyErrorEnvelope(RequestIdMiddleware(_ray_proxy_like))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as c:
        r = await c.post("/v1/audio/speech", headers=[(b"X-Request-Id", given)])
    assert r.status_code == 200
    (echoed,) = r.headers.get_list("x-request-id")
    assert r.text == echoed and 0 < len(echoed) <= 64
    assert (echoed == given.decode("latin-1")) is kept


async def _headers_seen(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the request's header names, as the proxy behind the middleware sees them."""
    names = sorted({k.decode("latin-1").lower() for k, _ in scope["headers"]})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": ",".join(names).encode()})


async def test_client_overrides_of_rays_timeout_and_disconnect_policy_are_dropped() -> None:
    # Ray's proxy reads these two per request: 0 turns the end-to-end timeout off and
    # `?1` keeps a replica working after its client hung up.
    transport = httpx.ASGITransport(app=ProxyErrorEnvelope(_headers_seen))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as c:
        r = await c.get(
            "/v1/audio/speech/long/x/sse",
            headers=[
                (b"X-Request-Timeout-Seconds", b"0"),
                (b"x-request-timeout-seconds", b"-1"),
                (b"X-Request-Disconnect-Disabled", b"?1"),
                (b"accept", b"text/event-stream"),
            ],
        )
    seen = r.text.split(",")
    assert "accept" in seen
    assert "x-request-timeout-seconds" not in seen
    assert "x-request-disconnect-disabled" not in seen


def test_the_ingress_refuses_a_proxy_started_without_the_middleware() -> None:
    from chatterbox_serve.config import ConfigError
    from deployments.proxy_errors import (
        CALLBACK_ENV,
        CALLBACK_PATH,
        UNHARDENED_MESSAGE,
        check_proxy_hardening,
    )

    check_proxy_hardening({CALLBACK_ENV: CALLBACK_PATH}, {}, allow=False)
    with pytest.raises(ConfigError) as missing:
        check_proxy_hardening({}, {}, allow=False)
    assert str(missing.value) == UNHARDENED_MESSAGE
    assert f"{CALLBACK_ENV}={CALLBACK_PATH}" in UNHARDENED_MESSAGE
    # Set through the Serve config's runtime_env, it reaches replicas but never the proxy.
    with pytest.raises(ConfigError):
        check_proxy_hardening({CALLBACK_ENV: CALLBACK_PATH}, {CALLBACK_ENV: CALLBACK_PATH}, False)
    check_proxy_hardening({}, {}, allow=True)  # the explicit development opt-out
