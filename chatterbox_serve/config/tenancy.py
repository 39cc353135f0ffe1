"""The tenancy section: what one API key may hold at once."""

from __future__ import annotations

from pydantic import Field

from chatterbox_serve.config.base import _env, _Section


class TenancyConfig(_Section):
    """What one API key may hold at once, so no tenant starves another (docs/SECURITY.md)."""

    max_sse_streams_per_key: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Job progress (SSE) streams one API key may hold open per ingress "
        "replica; more get 429.",
        json_schema_extra=_env("CHATTERBOX_MAX_SSE_STREAMS_PER_KEY"),
    )
    max_downloads_per_key: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Job downloads one API key may have in flight per ingress replica; "
        "more get 429.",
        json_schema_extra=_env("CHATTERBOX_MAX_DOWNLOADS_PER_KEY"),
    )
    stream_window_bytes: int = Field(
        4 * 1024**2,
        ge=64 * 1024,
        le=1024**3,
        description="Bytes of one streamed response (a job download, streamed speech) the "
        "ingress sends ahead of what Ray's proxy has delivered to the client; past it the "
        "response waits for the client to read.",
        json_schema_extra=_env("CHATTERBOX_STREAM_WINDOW_BYTES"),
    )
    sse_idle_timeout_s: float = Field(
        300.0,
        ge=1.0,
        le=86_400.0,
        description="A job progress (SSE) stream with nothing to report this long ends with "
        "a final `idle` event; the client reconnects to keep following.",
        json_schema_extra=_env("CHATTERBOX_SSE_IDLE_TIMEOUT_S"),
    )
    max_stored_jobs_per_key: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="Jobs, finished ones included, one API key may keep stored; more get 429.",
        json_schema_extra=_env("CHATTERBOX_MAX_STORED_JOBS_PER_KEY"),
    )
    max_stored_bytes_per_key: int = Field(
        2 * 1024**3,
        ge=1024,
        le=1024**5,
        description="Bytes of job input, chunk audio and output one API key may keep "
        "stored; a job that would pass it gets 507.",
        json_schema_extra=_env("CHATTERBOX_MAX_STORED_BYTES_PER_KEY"),
    )
    allow_unhardened_proxy: bool = Field(
        False,
        description="Start even when Ray's HTTP proxy lacks this service's middleware "
        "(RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH unset); only for a trusted development "
        "machine: clients can then lift the proxy's timeout and disconnect handling.",
        json_schema_extra=_env("CHATTERBOX_ALLOW_UNHARDENED_PROXY"),
    )
