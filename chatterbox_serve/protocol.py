"""HTTP wire schemas (OpenAI names and field order, our extensions at the end)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.errors import InvalidRequestError
from chatterbox_serve.pipeline import SpeechJob
from chatterbox_serve.text.languages import DEFAULT_LANGUAGE, languages_for, normalize_language
from chatterbox_serve.voices.resolve import ResolvedVoice

logger = logging.getLogger(__name__)


MAX_LOGGED_FIELDS = 10
MAX_LOGGED_FIELD_CHARS = 40


class OpenAIBaseModel(BaseModel):
    """Accepts unknown fields, as OpenAI clients send new ones, and logs their names."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_extra_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            # Names only, each cut short and at most a few: the body is the caller's,
            # and one request must not be able to write megabytes into the log.
            names = [repr(name[:MAX_LOGGED_FIELD_CHARS]) for name in list(self.model_extra)]
            more = len(names) - MAX_LOGGED_FIELDS
            shown = ", ".join(sorted(names[:MAX_LOGGED_FIELDS]))
            logger.info(
                "Ignoring unknown fields in %s: %s%s",
                type(self).__name__,
                shown,
                f" and {more} more" if more > 0 else "",
            )
        return self


MAX_VOICE_LENGTH = 256


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class VoiceId(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=256)


class SpeechRequest(OpenAIBaseModel):
    """Body of `POST /v1/audio/speech`."""

    model: str = Field("chatterbox", max_length=256, description="Accepted for compatibility.")
    input: str = Field(description="Text to speak.")
    voice: str | VoiceId | None = Field(
        None, description="A library voice name, alias or {'id': ...}; omitted means default."
    )
    instructions: str | None = Field(None, description="Accepted, not applied.")
    response_format: AudioFormat | None = Field(
        None, description="Audio format; omitted means DEFAULT_RESPONSE_FORMAT (mp3)."
    )
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] | None = Field(
        None, description="Stream raw encoded audio, or server-sent events."
    )

    # Chatterbox extensions, as in the original Chatterbox API.
    exaggeration: float | None = Field(None, ge=0.25, le=2.0)
    cfg_weight: float | None = Field(None, ge=0.0, le=1.0)
    temperature: float | None = Field(None, ge=0.05, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, ge=1.0, le=3.0)
    language: str | None = Field(None, min_length=2, max_length=16)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _no_surrogates_and_short_voice(self) -> SpeechRequest:
        # A lone surrogate cannot be encoded; refusing it here keeps it from reaching
        # storage lookups and the tokenizer, where it used to surface as a 500.
        voice = self.voice_key
        for field, value in (("input", self.input), ("voice", voice)):
            if value is not None and _has_surrogate(value):
                raise ValueError(f"'{field}' holds a lone surrogate code point (not text).")
        if voice is not None and len(voice) > MAX_VOICE_LENGTH:
            raise ValueError(f"'voice' is longer than {MAX_VOICE_LENGTH} characters.")
        return self

    @property
    def voice_key(self) -> str | None:
        if isinstance(self.voice, VoiceId):
            return self.voice.id
        return self.voice

    @property
    def voice_by_id(self) -> bool:
        """Whether the voice was given as `{"id": ...}`, which matches ids only."""
        return isinstance(self.voice, VoiceId)

    def to_job(
        self, settings: Settings, voice: ResolvedVoice, request_id: str, *, streaming: bool
    ) -> SpeechJob:
        """Check the limits that depend on settings and build the pipeline's job.

        Raises:
            InvalidRequestError: empty or too long input, too long instructions, or a
                language the loaded model does not speak.
        """
        text = self.input.strip()
        limit = settings.chunking.max_total_length
        if not text:
            raise InvalidRequestError("'input' must contain text.", param="input")
        if len(text) > limit:
            raise InvalidRequestError(
                f"'input' is {len(text)} characters; the limit is {limit} (MAX_TOTAL_LENGTH).",
                param="input",
                code="input_too_long",
            )
        max_instr = settings.server.max_instructions_length
        if self.instructions is not None and len(self.instructions) > max_instr:
            raise InvalidRequestError(
                f"'instructions' is longer than {max_instr} characters.", param="instructions"
            )
        language = self._language(settings, voice)
        g = settings.generation
        warnings: list[str] = []
        if self.instructions:
            warnings.append("instructions are accepted but not applied")
        template = SynthesisRequest(
            text="",
            language=language,
            voice=voice.prompt,
            exaggeration=_pick(self.exaggeration, g.exaggeration),
            cfg_weight=_pick(self.cfg_weight, settings.engine.cfg_scale),
            temperature=_pick(self.temperature, g.temperature),
            top_p=_pick(self.top_p, g.top_p),
            min_p=_pick(self.min_p, g.min_p),
            repetition_penalty=_pick(self.repetition_penalty, g.repetition_penalty),
            seed=self.seed,
            request_id=request_id,
        )
        return SpeechJob(
            request_id=request_id,
            text=text,
            format=self.response_format or AudioFormat(settings.audio.default_response_format),
            template=template,
            speed=self.speed,
            streaming=streaming,
            warnings=tuple(warnings),
            instructions_ignored=bool(self.instructions),
        )

    def _language(self, settings: Settings, voice: ResolvedVoice) -> str:
        supported = languages_for(settings.engine.use_multilingual_model)
        raw = self.language or voice.language or DEFAULT_LANGUAGE
        code = normalize_language(raw)
        if code not in supported:
            raise InvalidRequestError(
                f"Language {raw!r} is not supported by the loaded model; supported: "
                f"{', '.join(sorted(supported))}.",
                param="language",
                code="unsupported_language",
            )
        return code


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "chatterbox-serve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SpeechUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class WatermarkDetection(BaseModel):
    """`POST /v1/audio/watermark/detect`: is the file marked with Perth's watermark."""

    watermarked: bool = Field(description="The confidence is at or above perth's 0.5.")
    confidence: float = Field(description="Perth's detector output, 0 to 1.")


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON payload."""
    import json

    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 500, 503)
}
