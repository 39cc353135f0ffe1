"""The simulated section: the simulated engine's cost model and fault injection."""

from __future__ import annotations

from pydantic import Field

from chatterbox_serve.config.base import _env, _Section


class SimulatedEngineConfig(_Section):
    """Cost model of the simulated engine: one batch call costs base + per_item*n + per_char*chars.

    The defaults make one 234-character chunk alone cost 0.39 s, the per-chunk figure
    published for chatterbox-vllm on an RTX 3090 (154 chunks, 60.8 s of S3Gen), and
    make a batch cost mostly fixed, as batched T3 on vLLM and batched S3Gen are on a GPU.
    """

    base_s: float = Field(
        0.35,
        ge=0.0,
        le=60.0,
        description="Fixed cost of one engine call.",
        json_schema_extra=_env("CHATTERBOX_SIM_BASE_S"),
    )
    per_item_s: float = Field(
        0.01,
        ge=0.0,
        le=60.0,
        description="Cost of each item in a call.",
        json_schema_extra=_env("CHATTERBOX_SIM_PER_ITEM_S"),
    )
    per_char_s: float = Field(
        0.00012,
        ge=0.0,
        le=1.0,
        description="Cost of each input character in a call.",
        json_schema_extra=_env("CHATTERBOX_SIM_PER_CHAR_S"),
    )
    chars_per_second: float = Field(
        15.0,
        gt=0.0,
        le=1000.0,
        description="Characters of text per second of audio.",
        json_schema_extra=_env("CHATTERBOX_SIM_CHARS_PER_SECOND"),
    )
    streaming: bool = Field(
        False,
        description="Stream each item's audio in pieces by the vllm engine's render rule "
        "(CHATTERBOX_STREAM_FIRST_TOKENS, then CHATTERBOX_STREAM_MARGIN_S), its tokens "
        "coming evenly over the item's cost.",
        json_schema_extra=_env("CHATTERBOX_SIM_STREAMING"),
    )
    failure_marker: str = Field(
        "<<simulate-engine-failure>>",
        min_length=1,
        description="Text containing this marker fails in the engine (fault injection).",
        json_schema_extra=_env("CHATTERBOX_SIM_FAILURE_MARKER"),
    )
