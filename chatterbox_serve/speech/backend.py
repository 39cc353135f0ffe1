"""What the HTTP layer calls to speak: a Serve handle wrapper in production, local in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from chatterbox_serve.speech.messages import AudioPiece, RenderedSpeech, SpeechJob


class SpeechBackend(Protocol):
    """Renders or streams a `SpeechJob`, and reports the model's health."""

    async def render(self, job: SpeechJob) -> RenderedSpeech: ...

    def stream(self, job: SpeechJob) -> AsyncIterator[AudioPiece]: ...

    async def health(self) -> dict[str, Any]: ...
