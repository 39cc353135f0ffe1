"""OpenAI error envelopes for the answers Ray Serve's HTTP proxy gives by itself.

Some requests never reach our FastAPI app, so its error handlers cannot shape the
answer: the proxy answers 503 in plain text when the ingress deployment's
`max_queued_requests` is exceeded or no replica is up, 408 when
`request_timeout_s` passes before the first byte, 404 for an unknown route, and an
empty 500 (from uvicorn) when the ingress replica dies mid-request. OpenAI clients
parse `{"error": {...}}`, so this ASGI middleware, installed in every proxy, rewrites
those plain-text answers into the envelope and makes sure a 503 or 429 carries
`Retry-After`. Responses our app produced (JSON errors, audio) pass through untouched.

It also drops a client's `X-Request-Id` that is not 1 to 64 of `[A-Za-z0-9._-]`
before Ray's proxy sees it (found by `tools/hostile_sweep.py`): the proxy
decodes the header as UTF-8, so a non-UTF-8 byte there made it answer a bare 500,
and it echoed any other value, 10 KB ones included, in its logs and in a second
`X-Request-Id` response header. Without the header, Ray generates an id, which the
app then uses too.

It also drops `x-request-timeout-seconds` and `x-request-disconnect-disabled`, which
let any client turn off the proxy's end-to-end timeout and its cancel-on-disconnect.

Install it by setting, in the environment of every Ray node (KubeRay: the container
env of the head and worker groups):

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.proxy_errors:proxy_middlewares

The proxy reads that variable from the environment Ray was started with; the
`runtime_env` of a Serve config reaches replicas, not the proxy. So the ingress
replica, which inherits the same node environment, refuses to start without it
(`check_proxy_hardening`): a plain `serve run serve_config.yaml` either runs hardened
or fails with a message saying what to set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatterbox_serve.config import ConfigError
from chatterbox_serve.errors import (
    ClientError,
    EngineOverloadedError,
    ServerError,
    error_payload,
)
from deployments.http import REQUEST_ID_PATTERN
from deployments.streams import DeliveryReports

logger = logging.getLogger("ray.serve")

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK_PATH = "deployments.proxy_errors:proxy_middlewares"


UNHARDENED_MESSAGE = (
    "Ray Serve's HTTP proxy is running without this service's middleware, so clients "
    "could turn off its request timeout and disconnect handling. Set "
    f"{CALLBACK_ENV}={CALLBACK_PATH} in the environment of the process that starts Ray "
    "(export it in the shell before `serve run serve_config.yaml`; on KubeRay, in the "
    "container env of the head and every worker group), then start again. A Serve "
    "config's runtime_env does not reach the proxy. Only on a trusted development "
    "machine, CHATTERBOX_ALLOW_UNHARDENED_PROXY=true starts without it."
)


def check_proxy_hardening(
    environ: Mapping[str, str], runtime_env_vars: Mapping[str, str], allow: bool
) -> None:
    """Refuse to serve when this node's proxy was started without the middleware.

    `environ` is the replica's environment: the node's (which the proxy has too) plus
    `runtime_env_vars`, the Serve config's own, which the proxy never sees.

    Raises:
        ConfigError: the callback is not in the node's environment, and `allow` is off.
    """
    from_node = environ.get(CALLBACK_ENV) if CALLBACK_ENV not in runtime_env_vars else None
    if from_node == CALLBACK_PATH:
        return
    if allow:
        logger.warning("CHATTERBOX_ALLOW_UNHARDENED_PROXY is on: %s", UNHARDENED_MESSAGE)
        return
    raise ConfigError(UNHARDENED_MESSAGE)


def proxy_middlewares() -> list[Middleware]:
    """The Ray Serve HTTP proxy callback: middlewares the proxy wraps its app in."""
    # First is outermost: delivery is counted at the send that reaches the client.
    return [Middleware(DeliveryReports), Middleware(ProxyErrorEnvelope)]


class ProxyErrorEnvelope:
    """Turns the proxy's non-JSON error answers into OpenAI envelopes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["headers"] = [(k, v) for k, v in scope["headers"] if _kept(k.lower(), v)]
        started = False
        held: Message | None = None

        async def rewriting_send(message: Message) -> None:
            nonlocal started, held
            if message["type"] == "http.response.start":
                started = True
                if _is_proxy_error(message):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                if not message.get("more_body", False):
                    for out in _envelope(held["status"], _headers(held)):
                        await send(out)
                return
            await send(message)

        await self.app(scope, receive, rewriting_send)
        if not started:  # the app ended without answering: an ingress replica died
            # Ray's request-id middleware, inside this one, wrote the id into the scope.
            ids = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            known = {"x-request-id": ids["x-request-id"]} if "x-request-id" in ids else {}
            for out in _envelope(500, known):
                await send(out)


# Ray's proxy honours these per request, from whoever sends them: a timeout of 0 or
# less turns `request_timeout_s` off, and `?1` keeps the replica working after its
# client hung up (ray/serve/_private/http_util.py, `parse_request_timeout_header`).
# Meant for a trusted load balancer in front; from a tenant they defeat both limits.
PROXY_CONTROL_HEADERS = frozenset({b"x-request-timeout-seconds", b"x-request-disconnect-disabled"})


def _kept(name: bytes, value: bytes) -> bool:
    if name in PROXY_CONTROL_HEADERS:
        return False
    return name != b"x-request-id" or bool(REQUEST_ID_PATTERN.fullmatch(value.decode("latin-1")))


def _headers(message: Message) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message["headers"]}


def _is_proxy_error(message: Message) -> bool:
    status = int(message["status"])
    content_type = _headers(message).get("content-type", "")
    return status >= 400 and not content_type.startswith("application/json")


def _envelope(status: int, headers: dict[str, str]) -> list[Message]:
    request_id = headers.get("x-request-id")
    retry_after = headers.get("retry-after", "1")
    err: ClientError | ServerError
    if status in (429, 503):
        seconds = int(retry_after) if retry_after.isdigit() else 1
        err = EngineOverloadedError("proxy back-pressure", retry_after_s=seconds)
        if status == 429:
            err.status_code, err.error_type, err.code = 429, "rate_limit_error", "rate_limited"
    elif status < 500:
        message = {
            404: "No such endpoint.",
            408: "The request timed out before the first byte of the response.",
        }.get(status, "The request was rejected.")
        err = ClientError(message, code={404: "not_found", 408: "timeout"}.get(status))
        err.status_code = status
    else:
        err = ServerError("proxy error", code="replica_unavailable")
        err.status_code = status
    payload = error_payload(err, request_id)
    body = json.dumps(payload.body).encode()
    out_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    out_headers += [(k.lower().encode(), v.encode()) for k, v in payload.headers.items()]
    if request_id:
        out_headers.append((b"x-request-id", request_id.encode()))
    return [
        {"type": "http.response.start", "status": status, "headers": out_headers},
        {"type": "http.response.body", "body": body, "more_body": False},
    ]
