"""Voice audio on the model side: kept by sha256 so a request sends it once, not per chunk.

A request's first chunk carries its voice's audio; the others carry the voice
detached (sha256 and size only, `VoicePrompt.detach`). Before an engine call, the
model side re-attaches the audio from a cache bounded by bytes, filled by every item
that arrives with audio. An item whose voice is not held (its chunks reached a
replica that never saw the first one, or the audio was evicted) gets
`VoiceAudioMissingError` in its slot; `pipeline.resubmitting` then sends that chunk
again with the audio. So engines always receive whole prompts, and the same code
path stays correct with any number of model replicas.

Audio is only stored after its sha256 is checked, so one request can never make
another's voice speak with different audio.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from chatterbox_serve.engines.base import (
    SynthesisOutcome,
    SynthesisRequest,
    TTSEngine,
    VoicePrompt,
)
from chatterbox_serve.errors import ChatterboxError, EngineError, VoiceAudioMissingError


class VoiceAudioCache:
    """A least-recently-used map sha256 -> voice audio, bounded by total bytes."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, VoicePrompt] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def attach(
        self, requests: Sequence[SynthesisRequest]
    ) -> list[SynthesisRequest | ChatterboxError]:
        """Each request with its voice audio attached, or the error for its slot.

        Items that bring audio are stored first, so a detached item in the same batch
        as its request's first chunk finds the audio whatever their order.
        """
        bad: dict[int, ChatterboxError] = {}
        for index, request in enumerate(requests):
            voice = request.voice
            if voice is not None and not voice.detached:
                error = self._store(voice)
                if error is not None:
                    bad[index] = error
        out: list[SynthesisRequest | ChatterboxError] = []
        for index, request in enumerate(requests):
            voice = request.voice
            if index in bad:
                out.append(bad[index])
            elif voice is None or not voice.detached:
                out.append(request)
            else:
                held = self._get(voice.sha256)
                out.append(
                    VoiceAudioMissingError(voice.sha256)
                    if held is None
                    else replace(request, voice=held)
                )
        return out

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "voices": len(self._items),
                "bytes": self._bytes,
                "capacity_bytes": self.capacity_bytes,
            }

    def _get(self, sha256: str) -> VoicePrompt | None:
        with self._lock:
            held = self._items.get(sha256)
            if held is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(sha256)
            return held

    def _store(self, voice: VoicePrompt) -> ChatterboxError | None:
        with self._lock:
            if voice.sha256 in self._items:
                self._items.move_to_end(voice.sha256)
                return None
        if hashlib.sha256(voice.audio).hexdigest() != voice.sha256:
            return EngineError("voice audio does not match its sha256")
        if len(voice.audio) > self.capacity_bytes:
            return None  # used for its own item only
        with self._lock:
            if voice.sha256 not in self._items:
                self._items[voice.sha256] = voice
                self._bytes += len(voice.audio)
            while self._bytes > self.capacity_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped.audio)
        return None


async def synthesize_with_voices(
    engine: TTSEngine, cache: VoiceAudioCache, requests: Sequence[SynthesisRequest]
) -> list[SynthesisOutcome]:
    """`engine.synthesize` over the items whose voice audio is at hand; the rest fail alone."""
    attached = cache.attach(requests)
    ready = [(i, r) for i, r in enumerate(attached) if isinstance(r, SynthesisRequest)]
    outcomes: list[SynthesisOutcome | None] = [
        r if isinstance(r, ChatterboxError) else None for r in attached
    ]
    if ready:
        results = await engine.synthesize([r for _, r in ready])
        for (index, _), result in zip(ready, results, strict=True):
            outcomes[index] = result
    return [o if o is not None else EngineError("no outcome") for o in outcomes]
