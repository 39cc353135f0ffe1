"""The chunking section: chunk lengths, input and output limits of one request."""

from __future__ import annotations

from pydantic import Field

from chatterbox_serve.config.base import _env, _Section


class ChunkingConfig(_Section):
    max_chunk_length: int = Field(
        280,
        ge=20,
        le=2000,
        description="Longest text chunk sent to the model, in characters; shorter where a "
        "script costs more prompt and speech per character (Chinese, Japanese, Korean: "
        "text/speech_rates.py), so every chunk fits T3 with its speech.",
        json_schema_extra=_env("MAX_CHUNK_LENGTH"),
    )
    max_total_length: int = Field(
        4096,
        ge=1,
        le=200000,
        description="Longest accepted input, in characters (OpenAI's limit; the original "
        "Chatterbox API took 3000).",
        json_schema_extra=_env("MAX_TOTAL_LENGTH"),
    )
    stream_first_chunk_length: int = Field(
        100,
        ge=10,
        le=2000,
        description="Longest first chunk when streaming, so the first audio comes fast.",
        json_schema_extra=_env("CHATTERBOX_STREAM_FIRST_CHUNK_LENGTH"),
    )
    stream_chunks_ahead: int = Field(
        2,
        ge=1,
        le=10000,
        description="Chunks of a stream in flight past the one being heard, so each is "
        "ready (or streaming) before the one before has played out.",
        json_schema_extra=_env("CHATTERBOX_STREAM_CHUNKS_AHEAD"),
    )
    max_chunks_per_request: int = Field(
        128,
        ge=1,
        le=10000,
        description="Most chunks one request may produce.",
        json_schema_extra=_env("CHATTERBOX_MAX_CHUNKS_PER_REQUEST"),
    )
    max_audio_s_per_char: float = Field(
        0.25,
        gt=0.0,
        le=10.0,
        description="Most seconds of audio (before speed) per alphabetic character, where "
        "speech runs near 0.07; other scripts get the same multiple of their speech per "
        "character (text/speech_rates.py).",
        json_schema_extra=_env("CHATTERBOX_MAX_AUDIO_S_PER_CHAR"),
    )
    max_file_response_bytes: int = Field(
        64 * 1_048_576,
        ge=1024,
        le=4 * 1_073_741_824,
        description="Largest whole-file response; larger ones must be streamed.",
        json_schema_extra=_env("CHATTERBOX_MAX_FILE_RESPONSE_BYTES"),
    )
