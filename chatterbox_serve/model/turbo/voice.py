"""A reference recording to Turbo's voice inputs, as upstream `prepare_conditionals` does.

Turbo's differences from the original model's cloning (`model.voice`): the recording
must be longer than 5 s (upstream asserts it; here a 400 naming the voice), its
loudness is normalised to -27 LUFS (ITU-R BS.1770, `pyloudnorm`, as upstream) before
anything else, and the 375 prompt tokens come from its first 15 s. The S3Gen
reference (first 10 s) and the speaker embedding (all of it) are as before.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from chatterbox_serve.errors import InvalidRequestError
from chatterbox_serve.families import ModelFamily, spec_of
from chatterbox_serve.model.voice import S3GEN_RATE, VoiceInputs, clone_voice_inputs

logger = logging.getLogger(__name__)

MIN_REFERENCE_S = spec_of(ModelFamily.TURBO).min_voice_s
TARGET_LUFS = -27.0
PROMPT_REFERENCE_S = 15


def normalize_loudness(wav: np.ndarray, sample_rate: int, target_lufs: float = TARGET_LUFS) -> Any:
    """`wav` scaled to `target_lufs` integrated loudness; unchanged where that is undefined.

    As upstream `ChatterboxTurboTTS.norm_loudness`: silence (loudness -inf) or a meter
    error leaves the samples as they are.
    """
    import pyloudnorm

    try:
        loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(wav)
    except ValueError as exc:
        logger.warning("loudness normalisation skipped: %s", exc)
        return wav
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    if math.isfinite(gain) and gain > 0.0:
        return wav * gain
    return wav


def prepare_reference(wav24: np.ndarray) -> np.ndarray:
    """Check the length of 24 kHz reference samples and normalise their loudness.

    Raises:
        InvalidRequestError: 5 s of audio or less.
    """
    seconds = wav24.shape[-1] / S3GEN_RATE
    if seconds <= MIN_REFERENCE_S:
        raise InvalidRequestError(
            f"The Turbo model needs more than {MIN_REFERENCE_S:g} s of reference audio; "
            f"this voice has {seconds:.1f} s",
            param="voice",
        )
    # float64 after the gain, as upstream's: the later stages take either.
    return np.asarray(normalize_loudness(wav24, S3GEN_RATE))


def clone_turbo_voice(
    audio: bytes, *, s3gen: Any, voice_encoder: Any, prompt_len: int, device: Any
) -> VoiceInputs:
    """Turbo's speaker embedding, prompt tokens (up to `prompt_len`) and S3Gen reference."""
    return clone_voice_inputs(
        audio,
        s3gen=s3gen,
        voice_encoder=voice_encoder,
        prompt_len=prompt_len,
        device=device,
        prompt_reference_s=PROMPT_REFERENCE_S,
        prepare=prepare_reference,
    )
