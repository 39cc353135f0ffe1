"""What the HTTP layer calls to speak: a Serve handle wrapper in production, local in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from chatterbox_serve.speech.messages import AudioPiece, RenderedSpeech, SpeechOrder


class SpeechBackend(Protocol):
    """Renders or streams a `SpeechOrder`, and reports the model's health."""

    async def render(self, order: SpeechOrder) -> RenderedSpeech: ...

    def stream(self, order: SpeechOrder) -> AsyncIterator[AudioPiece]: ...

    async def health(self) -> dict[str, Any]: ...
