"""The voices section: where the voice library lives and how much it may hold."""

from __future__ import annotations

from pydantic import Field

from chatterbox_serve.config.base import _env, _Section


class VoiceConfig(_Section):
    voice_library_dir: str = Field(
        "./voices",
        description="Local voice library directory.",
        json_schema_extra=_env("VOICE_LIBRARY_DIR"),
    )
    voice_library_url: str | None = Field(
        None,
        description="Object-storage voice library (s3://bucket/prefix); wins over the dir.",
        json_schema_extra=_env("VOICE_LIBRARY_URL"),
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint for VOICE_LIBRARY_URL (MinIO, R2, ...); "
        "credentials come from the standard AWS chain.",
        json_schema_extra=_env("AWS_ENDPOINT_URL"),
    )
    max_voices: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most voices one library may hold.",
        json_schema_extra=_env("CHATTERBOX_MAX_VOICES"),
    )
    max_aliases_per_voice: int = Field(
        16,
        ge=0,
        le=1000,
        description="Most aliases one voice may have.",
        json_schema_extra=_env("CHATTERBOX_MAX_ALIASES_PER_VOICE"),
    )
