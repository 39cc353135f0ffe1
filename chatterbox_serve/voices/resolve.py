"""Voice resolution: from what a request names to the reference audio the engine gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chatterbox_serve.engines.base import VoicePrompt
from chatterbox_serve.errors import VoiceNotFoundError

# OpenAI's built-in voice names mean "the default voice" unless the library has them.
OPENAI_VOICE_NAMES = frozenset(
    "alloy ash ballad coral echo fable onyx nova sage shimmer verse marin cedar".split()
)
BUILTIN_VOICE = "default"


@dataclass(frozen=True)
class ResolvedVoice:
    """A voice ready for synthesis: `prompt` None means the model's built-in voice."""

    name: str
    prompt: VoicePrompt | None
    language: str | None = None
    # A stored voice's id (its content never changes) and owner id (None: shared).
    id: str | None = None
    owner: str | None = None
    # Seconds of the voice audio, where known (a model family may need a minimum).
    duration_s: float | None = None


class VoiceLookup(Protocol):
    """What resolution needs from a voice library."""

    def find(self, key: str, *, by_id: bool = False) -> ResolvedVoice | None:
        """A voice by name, alias or id (by id only when `by_id`); None if there is none."""

    def default(self) -> ResolvedVoice | None:
        """The user-chosen default voice; None means the model's built-in voice."""


class EmptyVoiceLibrary:
    """A library with no stored voices."""

    def find(self, key: str, *, by_id: bool = False) -> ResolvedVoice | None:
        return None

    def default(self) -> ResolvedVoice | None:
        return None


def resolve_voice(key: str | None, library: VoiceLookup, *, by_id: bool = False) -> ResolvedVoice:
    """Resolve a request's voice; unknown names raise `VoiceNotFoundError` (404).

    `by_id` is for `{"id": ...}`: only a voice id matches, never a name or alias.
    """
    if key is not None:
        found = library.find(key, by_id=True) if by_id else library.find(key)
        if found is not None:
            return found
        if by_id or (key not in OPENAI_VOICE_NAMES and key != BUILTIN_VOICE):
            raise VoiceNotFoundError(f"Voice {key!r} not found.", param="voice")
    return library.default() or ResolvedVoice(name=BUILTIN_VOICE, prompt=None)
