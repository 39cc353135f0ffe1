"""HTTP wire schemas (OpenAI names and field order, our extensions at the end)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest, VoicePrompt
from chatterbox_serve.errors import InvalidRequestError
from chatterbox_serve.families import ModelFamily, resolve_model
from chatterbox_serve.generation import GenerationOptions, Speed, ignored_given
from chatterbox_serve.speech.messages import SpeechOrder
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


class _OpenAISpeechFields(OpenAIBaseModel):
    """OpenAI's fields of `POST /v1/audio/speech`, in its order."""

    model: str | None = Field(
        None,
        max_length=256,
        description="A loaded model family (chatterbox, chatterbox-multilingual, "
        "chatterbox-turbo) or one of OpenAI's names (tts-1, tts-1-hd, gpt-4o-mini-tts) for "
        "the default family; omitted means the default family.",
    )
    input: str = Field(description="Text to speak.")
    voice: str | VoiceId | None = Field(
        None, description="A library voice name, alias or {'id': ...}; omitted means default."
    )
    instructions: str | None = Field(None, description="Accepted, not applied.")
    response_format: AudioFormat | None = Field(
        None, description="Audio format; omitted means DEFAULT_RESPONSE_FORMAT (mp3)."
    )
    speed: Speed = 1.0
    stream_format: Literal["audio", "sse"] | None = Field(
        None, description="Stream raw encoded audio, or server-sent events."
    )


class SpeechRequest(GenerationOptions, _OpenAISpeechFields):
    """Body of `POST /v1/audio/speech`: OpenAI's fields, then the Chatterbox extensions
    (the generation parameters of `GenerationOptions`, and the language)."""

    language: str | None = Field(None, min_length=2, max_length=16)

    # A lone surrogate cannot be encoded; refusing it here keeps it from reaching
    # storage lookups and the tokenizer, where it used to surface as a 500. Field
    # validators, so that the error's location (and the envelope's `param`) names the field.
    @field_validator("input")
    @classmethod
    def _input_is_text(cls, value: str) -> str:
        if _has_surrogate(value):
            raise ValueError("'input' holds a lone surrogate code point (not text).")
        return value

    @field_validator("voice")
    @classmethod
    def _voice_is_short_text(cls, value: str | VoiceId | None) -> str | VoiceId | None:
        key = value.id if isinstance(value, VoiceId) else value
        if key is not None and _has_surrogate(key):
            raise ValueError("'voice' holds a lone surrogate code point (not text).")
        if key is not None and len(key) > MAX_VOICE_LENGTH:
            raise ValueError(f"'voice' is longer than {MAX_VOICE_LENGTH} characters.")
        return value

    @property
    def voice_key(self) -> str | None:
        if isinstance(self.voice, VoiceId):
            return self.voice.id
        return self.voice

    @property
    def voice_by_id(self) -> bool:
        """Whether the voice was given as `{"id": ...}`, which matches ids only."""
        return isinstance(self.voice, VoiceId)

    def family(self, settings: Settings) -> ModelFamily:
        """The loaded family `model` names; raises `ModelNotFoundError` (404) otherwise."""
        return resolve_model(self.model, settings.families, settings.engine.default_family)

    def to_order(
        self, settings: Settings, voice: ResolvedVoice, request_id: str, *, streaming: bool
    ) -> SpeechOrder:
        """Check the limits that depend on settings and build the pipeline's order.

        Raises:
            ModelNotFoundError: a model this service does not load.
            InvalidRequestError: empty or too long input, too long instructions, a
                language the model does not speak, or a voice too short for it.
        """
        family = self.family(settings)
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
        warnings: list[str] = []
        if self.instructions:
            warnings.append("instructions are accepted but not applied")
        template = SynthesisRequest(
            text="",
            language=self._language(family, voice),
            voice=self._voice_prompt(family, voice),
            generation=self.resolve(settings.generation.parameters(family)),
            request_id=request_id,
            family=family,
        )
        return SpeechOrder(
            request_id=request_id,
            text=text,
            format=self.audio_format(settings),
            template=template,
            speed=self.speed,
            streaming=streaming,
            warnings=tuple(warnings),
            instructions_ignored=bool(self.instructions),
            ignored_fields=ignored_given(self.given(), family),
        )

    def audio_format(self, settings: Settings) -> AudioFormat:
        """The asked format, else the server's default."""
        return self.response_format or AudioFormat(settings.audio.default_response_format)

    def _language(self, family: ModelFamily, voice: ResolvedVoice) -> str:
        supported = languages_for(family.spec.multilingual)
        raw = self.language or voice.language or DEFAULT_LANGUAGE
        code = normalize_language(raw)
        if code not in supported:
            raise InvalidRequestError(
                f"Language {raw!r} is not supported by {family.value}; supported: "
                f"{', '.join(sorted(supported))}.",
                param="language",
                code="unsupported_language",
            )
        return code

    @staticmethod
    def _voice_prompt(family: ModelFamily, voice: ResolvedVoice) -> VoicePrompt | None:
        """The voice's audio, where it is long enough for `family` (when its length is known;
        the engine checks the rest)."""
        least = family.spec.min_voice_s
        if voice.prompt is not None and voice.duration_s is not None and least > 0:
            if voice.duration_s <= least:
                raise InvalidRequestError(
                    f"Voice {voice.name[:64]!r} has {voice.duration_s:.1f} s of audio; "
                    f"{family.value} needs more than {least:g} s of reference audio.",
                    param="voice",
                    code="voice_too_short",
                )
        return voice.prompt


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
    # Our extensions: the family this name speaks with, and the paralinguistic tags
    # its text may carry (`[laugh]`, ...; empty where they would be read as words).
    family: str | None = None
    tags: list[str] = Field(default_factory=list)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AudioModel(BaseModel):
    id: str


class AudioModelList(BaseModel):
    """Open WebUI's model discovery answer (`GET {base}/audio/models`)."""

    models: list[AudioModel]


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
# Routes where some callers need an operator key (ADMIN_API_KEYS) also answer 403.
OPERATOR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {"model": ErrorResponse},
}
