"""The server section: CORS, request size limits, API and operator keys."""

from __future__ import annotations

from pydantic import Field, SecretStr

from chatterbox_serve.config.base import _env, _Section


class ServerConfig(_Section):
    cors_origins: str = Field(
        "*",
        description="Comma-separated allowed CORS origins.",
        json_schema_extra=_env("CORS_ORIGINS"),
    )
    max_json_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest JSON request body.",
        json_schema_extra=_env("CHATTERBOX_MAX_JSON_BODY_BYTES"),
    )
    max_upload_bytes: int = Field(
        10 * 1_048_576,
        ge=1024,
        le=512 * 1_048_576,
        description="Largest uploaded audio file.",
        json_schema_extra=_env("CHATTERBOX_MAX_UPLOAD_BYTES"),
    )
    max_instructions_length: int = Field(
        4096,
        ge=0,
        le=100000,
        description="Longest accepted `instructions` field.",
        json_schema_extra=_env("CHATTERBOX_MAX_INSTRUCTIONS_LENGTH"),
    )
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated API keys, or the path of a file holding them (one per "
        "line, e.g. a mounted Kubernetes Secret); unset means the API is open, set but empty "
        "stops startup.",
        json_schema_extra=_env("API_KEYS"),
    )
    admin_api_keys: SecretStr | None = Field(
        None,
        description="Operator keys, in the same forms as API_KEYS: they also work as API "
        "keys, and alone may reset memory, clear request history, change alert thresholds, "
        "read /status and /memory, and see every tenant's requests; unset means no operator "
        "(open mode without keys: everyone is).",
        json_schema_extra=_env("ADMIN_API_KEYS"),
    )
