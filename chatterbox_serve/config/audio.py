"""The audio section: crossfade, MP3 bit rate, default format, watermark."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chatterbox_serve.config.base import _env, _Section


class AudioConfig(_Section):
    crossfade_ms: float = Field(
        25.0,
        ge=0.0,
        le=500.0,
        description="Equal-power crossfade between chunks.",
        json_schema_extra=_env("CHATTERBOX_CROSSFADE_MS"),
    )
    mp3_bitrate_kbps: int = Field(
        64,
        ge=32,
        le=320,
        description="MP3 bit rate.",
        json_schema_extra=_env("CHATTERBOX_MP3_BITRATE_KBPS"),
    )
    default_response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        "mp3",
        description="Format when a request names none: OpenAI's mp3; the original "
        "Chatterbox API answered wav.",
        json_schema_extra=_env("DEFAULT_RESPONSE_FORMAT"),
    )
    watermark: Literal["on", "off"] = Field(
        "on",
        description="Resemble AI's Perth implicit watermark on all generated speech, as "
        "upstream Chatterbox applies it; 'off' only where an operator must.",
        json_schema_extra=_env("WATERMARK"),
    )

    @property
    def watermarked(self) -> bool:
        """Whether generated audio carries the Perth watermark."""
        return self.watermark == "on"
