"""Voice conditioning for the torch engine: reference audio in, T3 and S3Gen inputs out.

Follows upstream Chatterbox's `prepare_conditionals`: the reference is read at 24 kHz;
S3Gen embeds its first 10 s; the S3 tokenizer turns the first 6 s at 16 kHz into at
most 150 prompt speech tokens; the voice encoder embeds the whole 16 kHz clip. The
built-in voice comes precomputed in `conds.pt`. Results are kept in a bounded LRU
keyed by the audio's sha256, so the same upload under two names is computed once.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from chatterbox_serve.errors import InvalidRequestError

S3GEN_RATE = 24_000
S3_TOKENIZER_RATE = 16_000
S3GEN_REFERENCE_S = 10
PROMPT_REFERENCE_S = 6
BUILTIN_KEY = "builtin"


@dataclass(frozen=True)
class VoiceInputs:
    """A voice's model inputs: speaker embedding (1, 256), prompt tokens (1, L), S3Gen ref."""

    speaker_emb: Any
    prompt_tokens: Any
    s3gen_ref: dict[str, Any]


class VoiceCache:
    """A bounded LRU of `VoiceInputs` that counts hits and misses."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: collections.OrderedDict[str, VoiceInputs] = collections.OrderedDict()

    def get_or_compute(self, key: str, compute: Callable[[], VoiceInputs]) -> VoiceInputs:
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
        return {"hits": self.hits, "misses": self.misses, "size": len(self._items)}


def builtin_voice_inputs(conds: dict[str, Any], device: Any) -> VoiceInputs:
    """The checkpoint's `conds.pt` voice, moved to `device`."""
    import torch

    t3 = conds["t3"]
    ref = {k: v.to(device) if torch.is_tensor(v) else v for k, v in conds["gen"].items()}
    return VoiceInputs(
        speaker_emb=t3["speaker_emb"].reshape(1, -1).to(device),
        prompt_tokens=t3["cond_prompt_speech_tokens"].reshape(1, -1).to(device),
        s3gen_ref=ref,
    )


# Stored voices were checked on upload (at most 60 s), but the engine decodes what it
# is sent, so it applies the upload's caps again rather than trust the bytes.
REFERENCE_MAX_S = 60.0


def decode_reference(audio: bytes) -> np.ndarray:
    """Mono float32 samples at 24 kHz, decoded within the upload caps (`decode_untrusted`).

    Raises:
        InvalidRequestError: the audio is missing, undecodable, or over a cap.
    """
    from chatterbox_serve.audio.decoding import DecodeLimits, decode_untrusted

    limits = DecodeLimits(max_bytes=max(len(audio), 1), max_duration_s=REFERENCE_MAX_S)
    decoded = decode_untrusted(audio, limits, mono=True, sample_rate=S3GEN_RATE, param="voice")
    mono = decoded.samples.reshape(-1)
    if mono.size == 0:
        raise InvalidRequestError("The voice reference audio is empty", param="voice")
    return np.asarray(mono, dtype=np.float32)


def clone_voice_inputs(
    audio: bytes,
    *,
    s3gen: Any,
    voice_encoder: Any,
    prompt_len: int,
    device: Any,
    prompt_reference_s: int = PROMPT_REFERENCE_S,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
) -> VoiceInputs:
    """Speaker embedding, prompt tokens and S3Gen reference of a reference recording.

    `prepare` checks or transforms the decoded 24 kHz samples first (Turbo: its length
    and loudness); the prompt tokens come from the first `prompt_reference_s` seconds.
    """
    import librosa
    import torch

    wav24 = decode_reference(audio)
    if prepare is not None:
        wav24 = prepare(wav24)
    wav16 = librosa.resample(wav24, orig_sr=S3GEN_RATE, target_sr=S3_TOKENIZER_RATE)
    ref = s3gen.embed_ref(wav24[: S3GEN_REFERENCE_S * S3GEN_RATE], S3GEN_RATE, device=device)
    tokens, _lens = s3gen.tokenizer.forward(
        [wav16[: prompt_reference_s * S3_TOKENIZER_RATE]], max_len=prompt_len
    )
    speaker = torch.from_numpy(
        voice_encoder.embeds_from_wavs([wav16], sample_rate=S3_TOKENIZER_RATE)
    ).mean(dim=0, keepdim=True)
    return VoiceInputs(
        speaker_emb=speaker.to(device),
        prompt_tokens=tokens.reshape(1, -1).to(device),
        s3gen_ref=ref,
    )
