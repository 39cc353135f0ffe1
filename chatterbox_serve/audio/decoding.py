"""Decoding untrusted audio uploads with hard caps on bytes, duration, rate, channels and time.

An uploaded file is hostile until decoded. A few kilobytes of FLAC or Vorbis can
hold hours of silence (a decompression bomb), and a header can declare a sample
rate, channel count or length that would make a naive decoder allocate gigabytes.
`decode_untrusted` checks what the header declares before decoding anything, then
counts every decoded sample and the wall time spent, and stops at the first cap it
crosses, so memory stays below `DecodeLimits.max_decoded_bytes` whatever the file
claims. Only the container formats in `ALLOWED_CONTAINERS` are opened, which keeps
FFmpeg's rarer demuxers away from untrusted input.

Every rejection is a `ClientError` (400, or 413 for size), with `param` naming the
upload field, because a bad file is the caller's to fix.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from chatterbox_serve.errors import InvalidRequestError, PayloadTooLargeError

# FFmpeg demuxer names (as `container.format.name` reports them) we accept.
ALLOWED_CONTAINERS = frozenset(
    {"wav", "mp3", "flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "aac", "aiff"}
)


@dataclass(frozen=True)
class DecodeLimits:
    """Caps for one decode; the defaults suit a voice reference clip."""

    max_bytes: int = 10 * 1_048_576
    max_duration_s: float = 60.0
    max_sample_rate: int = 192_000
    max_channels: int = 8
    time_budget_s: float = 10.0

    @property
    def max_decoded_bytes(self) -> int:
        """The most float32 memory the decoded samples can take."""
        return int(self.max_duration_s * self.max_sample_rate * self.max_channels * 4)


@dataclass(frozen=True)
class DecodedAudio:
    """Float32 samples shaped [channels, n], at the file's own rate unless resampled."""

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int
    container: str

    @property
    def duration_s(self) -> float:
        return int(self.samples.shape[1]) / self.sample_rate


class AudioDecodeError(InvalidRequestError):
    """The upload is not audio we can decode within the limits."""

    default_code = "invalid_audio"


def decode_untrusted(
    data: bytes,
    limits: DecodeLimits | None = None,
    *,
    mono: bool = True,
    sample_rate: int | None = None,
    param: str = "file",
) -> DecodedAudio:
    """Decode an uploaded file within `limits`, optionally to mono and a target rate.

    Raises:
        PayloadTooLargeError: more than `max_bytes` bytes.
        AudioDecodeError: not decodable audio, an unsupported container, a declared or
            actual rate, channel count or duration over its cap, or decoding that
            took longer than `time_budget_s`. `code` says which.
    """
    limits = limits or DecodeLimits()
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            f"Audio file is {len(data)} bytes; the limit is {limits.max_bytes}.", param=param
        )
    if not data:
        raise AudioDecodeError("Audio file is empty.", param=param)
    deadline = time.monotonic() + limits.time_budget_s
    try:
        return _decode(data, limits, mono, sample_rate, param, deadline)
    except av.FFmpegError as exc:
        raise AudioDecodeError(
            f"Could not decode the audio file ({type(exc).__name__}).", param=param
        ) from exc


def _decode(
    data: bytes,
    limits: DecodeLimits,
    mono: bool,
    target_rate: int | None,
    param: str,
    deadline: float,
) -> DecodedAudio:
    with av.open(io.BytesIO(data), mode="r") as container:
        name = container.format.name
        if name not in ALLOWED_CONTAINERS:
            raise AudioDecodeError(
                f"Unsupported audio container {name!r}.", param=param, code="unsupported_audio"
            )
        if not container.streams.audio:
            raise AudioDecodeError("The file has no audio stream.", param=param)
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0)
        _check_format(rate, channels, limits, param)
        declared = _declared_duration_s(container, stream)
        if declared is not None and declared > limits.max_duration_s:
            raise _too_long(declared, limits, param)

        out_rate = target_rate or rate
        max_samples = int(limits.max_duration_s * out_rate) + out_rate  # one second of slack
        resampler = av.AudioResampler(format="fltp", layout="mono" if mono else None, rate=out_rate)
        pieces: list[np.ndarray] = []
        total = 0
        for packet in container.demux(stream):
            _check_time(deadline, limits, param)
            for frame in packet.decode():
                # A stream may change format mid-way; every frame is checked, not the header.
                _check_format(frame.sample_rate, len(frame.layout.channels), limits, param)
                for out in resampler.resample(frame):
                    total += out.samples
                    if total > max_samples:
                        raise _too_long(total / out_rate, limits, param, decoded=True)
                    pieces.append(out.to_ndarray())
        for out in resampler.resample(None):
            total += out.samples
            pieces.append(out.to_ndarray())
        if total / out_rate > limits.max_duration_s:
            raise _too_long(total / out_rate, limits, param, decoded=True)
    if not pieces:
        raise AudioDecodeError("The file holds no audio samples.", param=param)
    samples = np.ascontiguousarray(np.concatenate(pieces, axis=1), dtype=np.float32)
    if not np.isfinite(samples).all():
        raise AudioDecodeError("The file decodes to non-finite samples.", param=param)
    return DecodedAudio(samples, out_rate, rate, channels, name)


def _check_format(rate: int, channels: int, limits: DecodeLimits, param: str) -> None:
    if not 1 <= rate <= limits.max_sample_rate:
        raise AudioDecodeError(
            f"Sample rate {rate} Hz is outside 1..{limits.max_sample_rate} Hz.",
            param=param,
            code="unsupported_sample_rate",
        )
    if not 1 <= channels <= limits.max_channels:
        raise AudioDecodeError(
            f"{channels} channels is outside 1..{limits.max_channels}.",
            param=param,
            code="unsupported_channels",
        )


def _declared_duration_s(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_time(deadline: float, limits: DecodeLimits, param: str) -> None:
    if time.monotonic() > deadline:
        raise AudioDecodeError(
            f"Decoding took longer than {limits.time_budget_s:g} s.",
            param=param,
            code="audio_decode_timeout",
        )


def _too_long(
    seconds: float, limits: DecodeLimits, param: str, *, decoded: bool = False
) -> AudioDecodeError:
    what = "decodes to" if decoded else "declares"
    return AudioDecodeError(
        f"Audio file {what} {seconds:.1f} s or more; the limit is {limits.max_duration_s:g} s.",
        param=param,
        code="audio_too_long",
    )


def decode_audio(data: bytes) -> tuple[np.ndarray, int, int]:
    """Decode trusted audio (our own output, test fixtures) into float32 [channels, n].

    Returns the samples with the rate and channel count. Untrusted uploads go through
    `decode_untrusted` instead.
    """
    container: Any
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray() for f in container.decode(stream)]
        rate = stream.codec_context.sample_rate
        channels = stream.codec_context.channels
    if not frames:
        return np.zeros((channels, 0), dtype=np.float32), rate, channels
    fmt = stream.codec_context.format
    arrays = [a if not fmt.is_packed else a.reshape(-1, channels).T for a in frames]
    samples = np.concatenate(arrays, axis=1).astype(np.float32)
    if samples.dtype.kind == "i" or np.abs(samples).max() > 1.5:
        samples = samples / 32768.0
    return samples, rate, channels
