"""Checks on what users upload as voices: names, sizes and the audio itself.

Audio is judged by decoding it, never by its extension or declared type. Decoding is
bounded: the caller reads at most `limit + 1` bytes, and `audio.decoding` caps duration,
sample rate, channels and decode time, so a file that claims or decodes to hours of
audio costs no more than one that decodes to a minute.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from chatterbox_serve.audio.decoding import DecodeLimits, decode_untrusted
from chatterbox_serve.errors import InvalidRequestError, PayloadTooLargeError

MAX_NAME_LENGTH = 100
# Names the HTTP API already uses as fixed paths under /voices, and the name that means
# the model's built-in voice in speech requests: a voice stored under one of them could
# never be fetched, renamed or deleted by name, so they are refused up front.
RESERVED_NAMES = frozenset({"default", "all-names"})
# The shape of the ids the library gives voices; names may not take it.
VOICE_ID_PATTERN = re.compile(r"voice_[0-9A-Za-z]+", re.IGNORECASE)
MIN_DURATION_S = 1.0
MAX_DURATION_S = 60.0
# Audio whose RMS is below -60 dBFS is treated as silence.
SILENCE_RMS = 10 ** (-60 / 20)
# A file that decodes to less than this share of the duration its header declares
# has been cut short (an MP3 with a Xing header, for example, still decodes its head).
TRUNCATION_RATIO = 0.9
READ_CHUNK = 64 * 1024

# PyAV container name -> (file extension, media type) for the stored original.
_CONTAINERS: dict[str, tuple[str, str]] = {
    "mp3": (".mp3", "audio/mpeg"),
    "wav": (".wav", "audio/wav"),
    "flac": (".flac", "audio/flac"),
    "ogg": (".ogg", "audio/ogg"),
    "aac": (".aac", "audio/aac"),
    "mov,mp4,m4a,3gp,3g2,mj2": (".m4a", "audio/mp4"),
    "matroska,webm": (".webm", "audio/webm"),
    "aiff": (".aiff", "audio/aiff"),
}
# Voices are decoded straight to what the engine conditions on: 24 kHz mono. The
# checks below need no more, and memory then follows the output, not the upload.
INSPECT_RATE = 24_000
_LEVEL_BLOCK = 1 << 16


@dataclass(frozen=True)
class AudioFacts:
    """What decoding an accepted upload established about it."""

    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    extension: str
    media_type: str


def validate_name(name: str, param: str = "name") -> str:
    """Return `name` if it can name a voice or alias; raise `InvalidRequestError` if not.

    Names keep the case they are given but are unique without regard to case (the
    library compares them NFC-normalised and case-folded), and are stored under a
    hash, so no name can reach outside the library's storage; the rules below keep
    them printable and usable in a URL path segment.
    """
    # One spelling per name: "café" typed as e + combining accent is the same name.
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidRequestError(
            f"'{param}' must be 1 to {MAX_NAME_LENGTH} characters; got {len(name)}.",
            param=param,
            code="invalid_name",
        )
    if name.casefold() in RESERVED_NAMES:
        raise InvalidRequestError(
            f"'{param}' may not be {name!r}: that name is reserved by the API "
            f"(reserved: {', '.join(sorted(RESERVED_NAMES))}).",
            param=param,
            code="reserved_name",
        )
    if VOICE_ID_PATTERN.fullmatch(name):
        raise InvalidRequestError(
            f"'{param}' may not look like a voice id ('voice_' and letters or digits): "
            "ids are given out by the server, and a name must not stand in for one.",
            param=param,
            code="reserved_name",
        )
    if name.strip() != name or name in (".", ".."):
        raise InvalidRequestError(
            f"'{param}' may not be '.' or '..' or start or end with whitespace.",
            param=param,
            code="invalid_name",
        )
    for ch in name:
        if ch in "/\\" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise InvalidRequestError(
                f"'{param}' may not contain '/', '\\', or control characters (found {ch!r}).",
                param=param,
                code="invalid_name",
            )
    return name


def read_bounded(stream: BinaryIO, limit: int, param: str = "audio") -> bytes:
    """Read a whole upload, but never more than `limit + 1` bytes of it.

    Raises:
        PayloadTooLargeError: the upload is larger than `limit` bytes.
    """
    parts: list[bytes] = []
    seen = 0
    while True:
        part = stream.read(min(READ_CHUNK, limit + 1 - seen))
        if not part:
            break
        parts.append(part)
        seen += len(part)
        if seen > limit:
            raise PayloadTooLargeError(
                f"'{param}' is larger than {limit} bytes.", param=param, code="file_too_large"
            )
    return b"".join(parts)


def _as_unit_float(raw: np.ndarray) -> np.ndarray:
    """Decoded samples as float64 in [-1, 1], whatever the sample format."""
    if raw.dtype.kind == "u":
        half = float(np.iinfo(raw.dtype).max + 1) / 2
        return (raw.astype(np.float64) - half) / half
    if raw.dtype.kind == "i":
        return raw.astype(np.float64) / float(np.iinfo(raw.dtype).max + 1)
    return raw.astype(np.float64)


def _rms(samples: np.ndarray) -> float:
    """Root mean square of float32 samples, summed block by block in float64."""
    flat = samples.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, _LEVEL_BLOCK):
        block = flat[start : start + _LEVEL_BLOCK]
        total += float(np.dot(block, block))
    return math.sqrt(total / max(flat.size, 1))


def inspect_audio(data: bytes, param: str = "audio") -> AudioFacts:
    """Decode an upload and return its facts, or raise `InvalidRequestError` (400).

    Rejects non-audio, corrupt and truncated files, audio shorter than 1 s or
    longer than 60 s, and audio that is silent throughout. Decoding goes through
    `audio.decoding.decode_untrusted`, which also refuses unknown containers, absurd
    sample rates, channel counts and declared lengths, and decodes that run too long.
    """

    def bad(message: str, code: str) -> InvalidRequestError:
        return InvalidRequestError(message, param=param, code=code)

    limits = DecodeLimits(max_bytes=max(len(data), 1), max_duration_s=MAX_DURATION_S)
    decoded = decode_untrusted(data, limits, mono=True, sample_rate=INSPECT_RATE, param=param)
    codec, format_name = decoded.codec, decoded.container
    declared_s = decoded.declared_s or 0.0
    rate, channels = decoded.source_rate, decoded.source_channels
    duration = decoded.duration_s
    if declared_s > 0 and duration < TRUNCATION_RATIO * declared_s:
        raise bad(
            f"The voice file is truncated: it declares {declared_s:.1f} s but decodes "
            f"to {duration:.1f} s.",
            "invalid_audio",
        )
    if duration < MIN_DURATION_S:
        raise bad(
            f"The voice audio is {duration:.2f} s; at least {MIN_DURATION_S:.0f} s is needed.",
            "audio_too_short",
        )
    rms = _rms(decoded.samples)
    if rms < SILENCE_RMS:
        raise bad("The voice audio is silent.", "audio_silent")
    ext, media_type = _CONTAINERS.get(format_name, (".bin", "application/octet-stream"))
    if format_name == "ogg" and codec == "opus":
        ext = ".opus"
    return AudioFacts(round(duration, 3), rate, channels, codec, ext, media_type)
