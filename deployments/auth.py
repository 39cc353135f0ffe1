"""API-key middleware: every route but the public ones needs `Authorization: Bearer <key>`."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from chatterbox_serve.auth import ApiKeys, load_api_keys
from chatterbox_serve.config import Settings
from chatterbox_serve.errors import AuthenticationError
from deployments.http import error_response

logger = logging.getLogger("ray.serve")

# Paths that must be answered without a key: liveness probes and the API docs.
PUBLIC_PATHS = frozenset(
    {"/health", "/v1/health", "/ping", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyMiddleware:
    """Answers 401 in the OpenAI envelope before any route or body is read.

    Install it inside the CORS middleware: browsers send preflight `OPTIONS` requests
    without credentials, and a 401 needs CORS headers for a browser to show it.
    """

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys.enabled
            or _public(scope)
            or scope.get("method") == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        raw = headers.get(b"authorization")
        token = bearer_token(raw.decode("latin-1") if raw is not None else None)
        if self.keys.accepts(token):
            await self.app(scope, receive, send)
            return
        # Never log the presented token: a near-miss is often a real key with a typo.
        message = "Missing API key." if token is None else "Invalid API key."
        if token is None:
            message += " Send 'Authorization: Bearer <key>'."
        response = error_response(AuthenticationError(message), None)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def install_auth(app: FastAPI, settings: Settings) -> ApiKeys:
    """Load the keys, say at startup whether the API is open, and add the middleware.

    Call it before adding the CORS middleware, so that CORS wraps it.
    """
    keys = load_api_keys(settings)
    if keys.enabled:
        logger.info("API key authentication is on (%d keys).", len(keys))
    else:
        logger.warning(
            "API_KEYS is not set: the API is OPEN to anyone who can reach it. "
            "Set API_KEYS to a comma-separated list or to a mounted Secret file."
        )
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    return keys


def _public(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path in PUBLIC_PATHS
