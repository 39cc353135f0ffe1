"""Errors, split by blame, and their mapping onto OpenAI's error envelope.

    ChatterboxError
    ├── ClientError (4xx)                 the caller can fix it
    │   ├── InvalidRequestError (400)     carries `param`
    │   │   └── UnsupportedFormatError
    │   ├── AuthenticationError (401)
    │   ├── PermissionDeniedError (403)
    │   ├── VoiceNotFoundError (404)
    │   ├── ModelNotFoundError (404)      a model this service does not load
    │   ├── ConflictError (409)
    │   ├── PayloadTooLargeError (413)
    │   ├── RangeNotSatisfiableError (416)
    │   ├── TooManyJobsError (429)
    │   │   └── TooManyStreamsError
    │   └── StorageQuotaError (507)       the key's own stored jobs
    └── ServerError (5xx)                 we must fix it; the public message is fixed
        ├── EngineError (500)
        │   └── VoiceAudioMissingError    internal: resend the chunk with its voice audio
        └── EngineOverloadedError (503)   retryable, with Retry-After

    ConfigError (a ValueError)            a setting is invalid; raised at startup, never
                                          mapped onto a response

Every error crosses Ray Serve handles, so each one pickles with its fields intact.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the variable and its allowed values."""


class ChatterboxError(Exception):
    """Base of every error this service reports to a client."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.param, self.code, self.__dict__))


def _rebuild(
    cls: type[ChatterboxError],
    message: str,
    param: str | None,
    code: str | None,
    state: dict[str, Any],
) -> ChatterboxError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    err.message, err.param, err.code = message, param, code
    return err


class ClientError(ChatterboxError):
    status_code = 400
    error_type = "invalid_request_error"


class InvalidRequestError(ClientError):
    default_code = "invalid_value"


class UnsupportedFormatError(InvalidRequestError):
    default_code = "unsupported_format"


class AuthenticationError(ClientError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(ClientError):
    """A valid key that may not do this: an operator route called with a tenant key."""

    status_code = 403
    error_type = "permission_error"
    default_code = "operator_only"


class VoiceNotFoundError(ClientError):
    status_code = 404
    default_code = "voice_not_found"


class ModelNotFoundError(ClientError):
    status_code = 404
    default_code = "model_not_found"


class NotFoundError(ClientError):
    status_code = 404
    default_code = "not_found"


class ConflictError(ClientError):
    status_code = 409
    default_code = "conflict"


class PayloadTooLargeError(ClientError):
    status_code = 413
    default_code = "payload_too_large"


class RangeNotSatisfiableError(ClientError):
    status_code = 416
    default_code = "range_not_satisfiable"


class TooManyJobsError(ClientError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "too_many_jobs"


class StorageQuotaError(ClientError):
    """The caller's own stored jobs fill its quota: 507, with its figures in the message."""

    status_code = 507
    error_type = "insufficient_quota"
    default_code = "storage_quota_exceeded"


class TooManyStreamsError(TooManyJobsError):
    """One key holds as many progress streams or downloads as it may (per ingress replica)."""

    default_code = "too_many_streams"


class ServerError(ChatterboxError):
    status_code = 500
    error_type = "server_error"
    public_message = "The server failed to process the request."


class EngineError(ServerError):
    default_code = "engine_error"
    public_message = "Speech synthesis failed."


class VoiceAudioMissingError(EngineError):
    """The model side was sent a voice by sha256 only and does not hold its audio.

    Never meant for a client: the pipeline answers it by sending the chunk again with
    the audio attached. Should it escape, it is a plain 500.
    """

    default_code = "voice_audio_missing"

    def __init__(self, sha256: str, **kw: Any) -> None:
        super().__init__(f"voice audio {sha256[:16]}... is not held here", **kw)
        self.sha256 = sha256


class EngineOverloadedError(ServerError):
    status_code = 503
    default_code = "overloaded"
    public_message = "The service is overloaded; retry after a short wait."

    def __init__(self, message: str = "overloaded", *, retry_after_s: int = 1, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class StorageError(ServerError):
    """Voice storage failed (read-only, I/O error): not a synthesis failure."""

    default_code = "storage_error"
    public_message = "The server could not read or write its storage."


class InsufficientStorageError(StorageError):
    status_code = 507
    default_code = "insufficient_storage"
    public_message = "The server has no space left to store this; try again later."


def _server_error_for(exc: BaseException) -> ServerError:
    if isinstance(exc, ServerError):
        return exc
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return InsufficientStorageError("no space")
        return StorageError("storage")
    return EngineError("unexpected")


@dataclass(frozen=True)
class ErrorPayload:
    """What the HTTP layer needs to answer an error: status, envelope and headers."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str]


def error_payload(exc: BaseException, request_id: str | None = None) -> ErrorPayload:
    """Map any exception onto OpenAI's `{"error": {...}}` envelope.

    Client errors keep their message. Server errors get a fixed public message plus
    the request id, so the internal text stays in the logs only.
    """
    if isinstance(exc, ServerError) or not isinstance(exc, ChatterboxError):
        err = _server_error_for(exc)
        message = err.public_message
        if request_id:
            message = f"{message} Request id: {request_id}."
        headers = {}
        if isinstance(err, EngineOverloadedError):
            headers["Retry-After"] = str(err.retry_after_s)
        body = {"message": message, "type": err.error_type, "param": None, "code": err.code}
        return ErrorPayload(err.status_code, {"error": body}, headers)
    body = {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}
    return ErrorPayload(exc.status_code, {"error": body}, {})
