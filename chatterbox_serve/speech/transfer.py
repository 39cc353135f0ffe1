"""Sending engine requests to the model, with a voice's audio only where the model lacks it.

A request's later chunks, and a long job's chunks, name their voice by sha256; the
model side keeps the audio it has been sent (`engines.voice_audio`). Where a replica
lacks it, the item fails with `VoiceAudioMissingError` and is sent again whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
from chatterbox_serve.errors import VoiceAudioMissingError


class Cancellable(Protocol):
    def __await__(self) -> Any: ...
    def cancel(self) -> Any: ...


# Sends one item to the model: a Serve handle call in production, a local engine in tests.
Submit = Callable[[SynthesisRequest], Cancellable]
# Speaks one item as pieces, the first before the model is done (`TTSEngine.synthesize_stream`).
SubmitStream = Callable[[SynthesisRequest], AsyncIterator[SynthesisResult]]


def send_detached(submit: Submit, item: SynthesisRequest) -> Cancellable:
    """Send `item` with its voice detached; should the model lack the audio, send it whole.

    The resend happens as soon as the miss comes back, not when the caller gets to
    this chunk, so chunks that reached a replica which never saw the voice cost one
    extra engine call each, in parallel.
    """
    if item.voice is None or item.voice.detached:
        return submit(item)
    return _Resend(submit, item)


async def stream_detached(
    submit_stream: SubmitStream, item: SynthesisRequest
) -> AsyncGenerator[SynthesisResult, None]:
    """`item`'s pieces, sent with its voice detached; resent whole should the model lack it.

    The model finds the miss before any audio; one after a piece is a failure, as a
    resend would repeat that piece.
    """
    # `_closing`: a listener who leaves closes the model's stream at once.
    if item.voice is not None and not item.voice.detached:
        begun = False
        detached = replace(item, voice=item.voice.detach())
        try:
            async with _closing(submit_stream(detached)) as pieces:
                async for piece in pieces:
                    begun = True
                    yield piece
            return
        except VoiceAudioMissingError:
            if begun:
                raise
    async with _closing(submit_stream(item)) as pieces:
        async for piece in pieces:
            yield piece


@contextlib.asynccontextmanager
async def _closing(
    pieces: AsyncIterator[SynthesisResult],
) -> AsyncGenerator[AsyncIterator[SynthesisResult], None]:
    try:
        yield pieces
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()


class _Resend:
    def __init__(self, submit: Submit, item: SynthesisRequest) -> None:
        assert item.voice is not None
        self._submit = submit
        self._whole = item
        self._call: Cancellable = submit(replace(item, voice=item.voice.detach()))
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> Any:
        try:
            return await self._call
        except VoiceAudioMissingError:
            self._call = self._submit(self._whole)
            return await self._call

    def __await__(self) -> Any:
        return self._task.__await__()

    def cancel(self) -> Any:
        self._call.cancel()
        return self._task.cancel()
