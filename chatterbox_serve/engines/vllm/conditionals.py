"""Voice conditionals for the vLLM engine, computed from reference audio bytes and cached.

A voice costs a speaker-encoder pass, an S3 tokenizer pass and an S3Gen reference
embedding, so the result is kept in a bounded LRU keyed by the sha256 of the audio
bytes: the same upload under two names is computed once, and a changed file under
the same name is not served stale. chatterbox-vllm's own `get_audio_conditionals` is
an `lru_cache` keyed by file path, which has neither property; this module calls the
function underneath that cache (`__wrapped__`) with a private temporary WAV file.
"""

from __future__ import annotations

import collections
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from chatterbox_serve.audio import decode_audio
from chatterbox_serve.engines.base import VoicePrompt
from chatterbox_serve.errors import InvalidRequestError

logger = logging.getLogger(__name__)

BUILTIN_KEY = "builtin"


@dataclass(frozen=True)
class VoiceConditionals:
    """What one voice contributes to a prompt: T3 conditioning rows and the S3Gen reference."""

    cond_emb: Any  # (34, 1024) CPU tensor, built with exaggeration 0.5
    s3gen_ref: dict[str, Any]


class ConditionalsCache:
    """A bounded LRU of voice conditionals that counts its hits and misses."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: collections.OrderedDict[str, VoiceConditionals] = collections.OrderedDict()

    def get_or_compute(
        self, key: str, compute: Callable[[], VoiceConditionals]
    ) -> VoiceConditionals:
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = compute()
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "size": len(self._items),
            "capacity": self.capacity,
        }


def decode_reference(audio: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and rate of reference audio in any container PyAV reads."""
    try:
        samples, rate, _channels = decode_audio(audio)
    except Exception as exc:
        raise InvalidRequestError(
            f"Could not decode the voice reference audio: {exc}", param="voice"
        ) from exc
    mono = samples.mean(axis=0)
    if mono.size == 0:
        raise InvalidRequestError("The voice reference audio is empty", param="voice")
    return mono.astype(np.float32), rate


def compute_conditionals(tts: Any, voice: VoicePrompt | None) -> VoiceConditionals:
    """Run chatterbox-vllm's conditioning for one voice, bypassing its path-keyed cache.

    `voice=None` gives the checkpoint's built-in voice (`conds.pt`).
    """
    uncached = type(tts).get_audio_conditionals.__wrapped__
    if voice is None:
        s3gen_ref, cond_emb = uncached(tts, None)
        return VoiceConditionals(cond_emb=cond_emb, s3gen_ref=s3gen_ref)
    samples, rate = decode_reference(voice.audio)
    # librosa inside chatterbox-vllm reads a path; a private directory avoids name clashes.
    with tempfile.TemporaryDirectory(prefix="chatterbox-voice-") as tmp:
        path = Path(tmp) / f"{voice.sha256}.wav"
        sf.write(path, samples, rate, subtype="FLOAT")
        s3gen_ref, cond_emb = uncached(tts, str(path))
    return VoiceConditionals(cond_emb=cond_emb, s3gen_ref=s3gen_ref)


def cache_key(voice: VoicePrompt | None) -> str:
    return BUILTIN_KEY if voice is None else voice.sha256
