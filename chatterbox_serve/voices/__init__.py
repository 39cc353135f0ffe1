"""Voices: resolving a request's voice, the shared voice library, its store and validation."""

from chatterbox_serve.voices.resolve import (
    BUILTIN_VOICE,
    OPENAI_VOICE_NAMES,
    EmptyVoiceLibrary,
    ResolvedVoice,
    VoiceLookup,
    resolve_voice,
)

__all__ = [
    "BUILTIN_VOICE",
    "OPENAI_VOICE_NAMES",
    "EmptyVoiceLibrary",
    "ResolvedVoice",
    "VoiceLookup",
    "resolve_voice",
]
