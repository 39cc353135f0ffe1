"""HTTP plumbing shared by every route: error envelopes, body limits, request ids."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatterbox_serve.errors import ChatterboxError, PayloadTooLargeError, error_payload

logger = logging.getLogger("ray.serve")

REQUEST_ID_HEADER = "X-Request-Id"


# What a client-chosen request id may look like; anything else is replaced, since the
# id goes into logs, error messages and response headers.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = given if REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex
        request.state.request_id = rid
    return str(rid)


def error_response(exc: BaseException, request_id: str | None) -> JSONResponse:
    """The single mapping from any exception to an OpenAI-envelope response."""
    if not isinstance(exc, ChatterboxError) or exc.status_code >= 500:
        logger.error("request %s failed: %r", request_id, exc, exc_info=exc)
    payload = error_payload(exc, request_id)
    return JSONResponse(payload.body, status_code=payload.status_code, headers=payload.headers)


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "form", "path")]
    # Union members add their type name to the location; the field is the first part.
    return parts[0] if parts else None


# The detail of the HTTPException FastAPI raises when it cannot decode a JSON body.
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


def install_error_handlers(app: FastAPI) -> None:
    async def on_chatterbox_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, request_id_of(request))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        param = _validation_param(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            message, param = "Request body is not valid JSON.", None
        elif first.get("type") == "model_attributes_type" and param is None:
            # A form post or a JSON array: pydantic's wording does not tell the caller.
            message = "Request body must be a JSON object sent as Content-Type: application/json."
        elif first.get("type") == "missing" and param is None:
            message = "Request body is missing: send a JSON object."
        elif first.get("type") == "missing":
            message = f"Missing required parameter '{param}'."
        elif first.get("type") == "value_error" and "UploadFile" in str(first.get("msg")):
            message = f"'{param}' must be a file part of a multipart form, not a text field."
        elif first.get("type") == "value_error" and isinstance(ctx := first.get("ctx"), dict):
            # Our validators' own sentences, without pydantic's "Value error, " prefix.
            message = str(ctx.get("error") or first.get("msg"))
            if param and f"'{param}'" not in message:
                message = f"Invalid value for '{param}': {message}."
        else:
            message = (
                f"Invalid value for '{param}': {first.get('msg')}."
                if param
                else str(first.get("msg"))
            )
        from chatterbox_serve.errors import InvalidRequestError

        return error_response(InvalidRequestError(message, param=param), request_id_of(request))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        from chatterbox_serve.errors import ClientError, InvalidRequestError

        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
            # FastAPI's words for a body json.loads could not take (not UTF-8, nested
            # past the recursion limit): say what to send instead.
            err: ClientError = InvalidRequestError(
                "Request body could not be parsed: send a UTF-8 JSON object, not nested "
                "more than a few levels deep."
            )
            return error_response(err, request_id_of(request))
        err = ClientError(str(exc.detail), code=f"http_{exc.status_code}")
        err.status_code = exc.status_code
        err.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        response = error_response(err, request_id_of(request))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, request_id_of(request))

    app.add_exception_handler(ChatterboxError, on_chatterbox_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimitMiddleware:
    """Answers 413 for bodies over the limit, counting bytes as they arrive.

    Multipart uploads get the upload limit plus room for the form fields; every other
    body gets the JSON limit. A declared Content-Length over the limit is refused
    before any of the body is read. A body sent without a length (chunked) is read
    here, up to the limit, and replayed to the app: raising from inside the app's
    `receive` would reach FastAPI's body parser, which turns any error into a 400.
    """

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit + 256 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # latin-1, as HTTP defines header bytes: any byte decodes, none raises.
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        multipart = headers.get("content-type", "").startswith("multipart/form-data")
        limit = self.upload_limit if multipart else self.json_limit
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client gone before the body ended
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await self._reject(scope, receive, send, limit)
                return
            parts.append(body)
            if not message.get("more_body", False):
                break
        # One copy of the body: a single part is passed on as is, several are joined
        # and the parts dropped before the app runs.
        whole: bytes | None = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                body, whole = whole, None
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as streaming needs

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(PayloadTooLargeError(_too_large(limit)), None)
        await response(scope, receive, send)


def _too_large(limit: int) -> str:
    return f"Request body is larger than {limit} bytes."
