"""API-key middleware: every route but the public ones needs `Authorization: Bearer <key>`.

Tenants hold `API_KEYS`; operators hold `ADMIN_API_KEYS`, which work as API keys too
and alone open the operator routes (`require_operator`). See docs/SECURITY.md.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from chatterbox_serve.auth import ApiKeys, load_admin_keys, load_api_keys
from chatterbox_serve.config import Settings
from chatterbox_serve.errors import (
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
)
from chatterbox_serve.jobs.records import owner_of
from deployments.http import error_response
from deployments.routes.web import wants_html

logger = logging.getLogger("ray.serve")

# Paths that must be answered without a key: liveness probes, the API docs and the
# playground's page and files (its API calls carry the key). `/` is public only for
# browsers asking for HTML; `_public` decides that from the Accept header.
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/v1/health",
        "/ping",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/ui",
    }
)
PUBLIC_PREFIXES = ("/ui/",)
# Where the middleware leaves the caller's owner id in the ASGI scope's `state`.
OWNER_STATE = "chatterbox_owner"
OPERATOR_STATE = "chatterbox_operator"
ADMIN_KEY_STATE = "chatterbox_admin_key"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyMiddleware:
    """Decides who is calling, once, and answers 401 before any route or body is read.

    It leaves in the scope's `state` the caller's owner id (`Owner`), whether the
    caller is an operator (`require_operator`), and whether it presented an operator
    key. Install it inside the CORS middleware: browsers send preflight `OPTIONS`
    requests without credentials, and a 401 needs CORS headers for a browser to show it.
    """

    def __init__(self, app: ASGIApp, keys: ApiKeys, admin: ApiKeys | None = None) -> None:
        self.app = app
        self.keys = keys
        self.admin = admin or ApiKeys()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state.update({OWNER_STATE: None, OPERATOR_STATE: False, ADMIN_KEY_STATE: False})
        given = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        if len(given) > 1:
            # Readers disagree on which of several counts (a dict keeps the last,
            # Starlette's `headers.get` the first): accept none.
            err = InvalidRequestError(
                "Send exactly one Authorization header.",
                param="Authorization",
                code="duplicate_authorization",
            )
            await error_response(err, None)(scope, receive, send)
            return
        token = bearer_token(given[0].decode("latin-1") if given else None)
        if _public(scope) or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        admin_key = self.admin.accepts(token)
        if not self.keys.enabled:
            # Open: one shared namespace. Operators are the admin keys, if any; with
            # none, nobody can be told apart, so everyone is.
            state[OPERATOR_STATE] = admin_key or not self.admin.enabled
            state[ADMIN_KEY_STATE] = admin_key
            await self.app(scope, receive, send)
            return
        if admin_key or self.keys.accepts(token):
            # The one place the caller's identity is decided; routes read it back
            # through `Owner` and `require_operator`, never from the header.
            state.update({OWNER_STATE: owner_of(token), OPERATOR_STATE: admin_key})
            state[ADMIN_KEY_STATE] = admin_key
            await self.app(scope, receive, send)
            return
        # Never log the presented token: a near-miss is often a real key with a typo.
        message = "Missing API key." if token is None else "Invalid API key."
        if token is None:
            message += " Send 'Authorization: Bearer <key>'."
        response = error_response(AuthenticationError(message), None)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def request_owner(request: Request) -> str | None:
    """The caller's owner id as `ApiKeyMiddleware` decided it; None when the API is open.

    Raises:
        AuthenticationError: the request did not pass the middleware (fail closed).
    """
    state = request.scope.get("state", {})
    if OWNER_STATE not in state:
        raise AuthenticationError("Missing API key. Send 'Authorization: Bearer <key>'.")
    owner: str | None = state[OWNER_STATE]
    return owner


def is_operator(request: Request) -> bool:
    """Whether the caller may use operator routes and see every tenant's requests."""
    return bool(request.scope.get("state", {}).get(OPERATOR_STATE, False))


def presented_admin_key(request: Request) -> bool:
    """Whether the caller sent an operator key (not merely: the API is open)."""
    return bool(request.scope.get("state", {}).get(ADMIN_KEY_STATE, False))


def require_operator(request: Request) -> None:
    """Route dependency: 403 unless the caller is an operator.

    Raises:
        PermissionDeniedError: a tenant's key, or no operator keys configured.
    """
    if not is_operator(request):
        raise PermissionDeniedError(
            "Only an operator key may do this. Operator keys are set in ADMIN_API_KEYS."
        )


# A route's caller: `owner: Owner`. A hash of the API key, never the key itself.
Owner = Annotated[str | None, Depends(request_owner)]


def install_auth(app: FastAPI, settings: Settings) -> ApiKeys:
    """Load the keys, say at startup whether the API is open, and add the middleware.

    Call it before adding the CORS middleware, so that CORS wraps it.
    """
    keys = load_api_keys(settings)
    admin = load_admin_keys(settings)
    if keys.enabled:
        logger.info(
            "API key authentication is on (%d keys, %d operator keys).", len(keys), len(admin)
        )
    else:
        logger.warning(
            "API_KEYS is not set: the API is OPEN to anyone who can reach it. "
            "Set API_KEYS to a comma-separated list or to a mounted Secret file."
        )
    app.add_middleware(ApiKeyMiddleware, keys=keys, admin=admin)
    return keys


def _public(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    if path == "/":
        # The playground page loads without a key (it then asks for one); API clients
        # of `/` keep getting what they always got.
        return wants_html(_header(scope, b"accept"))
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
