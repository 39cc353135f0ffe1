"""Audio formats and incremental encoding.

One `AudioFormat` enum holds everything about a response format (codec, container,
MIME type), and one `StreamingEncoder` encodes both whole files and streams, so a
streamed response is byte-for-byte a valid file of its format.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_RATE = 24_000


@dataclass(frozen=True)
class _FormatSpec:
    container: str | None
    codec: str | None
    media_type: str


class AudioFormat(str, enum.Enum):
    """OpenAI's `response_format` values, with how each is produced."""

    MP3 = "mp3"
    OPUS = "opus"
    AAC = "aac"
    FLAC = "flac"
    WAV = "wav"
    PCM = "pcm"

    @property
    def spec(self) -> _FormatSpec:
        return _SPECS[self]

    @property
    def media_type(self) -> str:
        return self.spec.media_type


_SPECS: dict[AudioFormat, _FormatSpec] = {
    AudioFormat.MP3: _FormatSpec("mp3", "libmp3lame", "audio/mpeg"),
    AudioFormat.OPUS: _FormatSpec("ogg", "libopus", "audio/ogg"),
    AudioFormat.AAC: _FormatSpec("adts", "aac", "audio/aac"),
    AudioFormat.FLAC: _FormatSpec("flac", "flac", "audio/flac"),
    AudioFormat.WAV: _FormatSpec(None, None, "audio/wav"),
    AudioFormat.PCM: _FormatSpec(None, None, "audio/pcm"),
}


def to_pcm16(audio: np.ndarray) -> bytes:
    """Float audio in [-1, 1] as little-endian signed 16-bit samples."""
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """A 44-byte PCM16 mono WAV header; `None` data size marks a stream of unknown length."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", size)
    )


class _Sink:
    """A write-only target: PyAV sees no `seek`, so muxers never rewrite earlier bytes."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class StreamingEncoder:
    """Encodes one response incrementally: `encode` each piece, then `finish` once.

    The bytes returned by all calls, concatenated, form one valid file. `total_bytes`
    is known up front only for whole-file WAV, where the header holds exact sizes.
    """

    def __init__(
        self,
        fmt: AudioFormat,
        sample_rate: int = SAMPLE_RATE,
        *,
        total_samples: int | None = None,
        mp3_bitrate_kbps: int = 64,
    ) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self._header_pending = fmt is AudioFormat.WAV
        self._total_samples = total_samples
        self._finished = False
        self._container: Any = None
        if fmt.spec.codec is not None:
            self._open_container(mp3_bitrate_kbps)

    def _open_container(self, mp3_bitrate_kbps: int) -> None:
        import av

        self._sink = _Sink()
        spec = self.format.spec
        self._container = av.open(self._sink, mode="w", format=spec.container)
        stream = self._container.add_stream(spec.codec, rate=self.sample_rate)
        stream.layout = "mono"
        if self.format is AudioFormat.MP3:
            stream.bit_rate = mp3_bitrate_kbps * 1000
        elif self.format in (AudioFormat.OPUS, AudioFormat.AAC):
            stream.bit_rate = 64_000
        self._stream = stream
        codec_ctx = stream.codec_context
        self._resampler = av.AudioResampler(
            format=codec_ctx.format.name,
            layout="mono",
            rate=self.sample_rate,
            frame_size=codec_ctx.frame_size or None,
        )
        self._pts = 0

    def encode(self, audio: np.ndarray) -> bytes:
        """Encode the next piece of audio; returns whatever bytes are ready."""
        if self._finished:
            raise RuntimeError("encoder already finished")
        if self._container is None:
            return self._raw_header() + to_pcm16(audio)
        import av

        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
        if samples.shape[1] == 0:
            return b""
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += samples.shape[1]
        return self._mux(self._resampler.resample(frame))

    def finish(self) -> bytes:
        """Flush the codec and close the container; returns the last bytes."""
        if self._finished:
            return b""
        self._finished = True
        if self._container is None:
            return self._raw_header()
        tail = self._mux(self._resampler.resample(None))
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return tail + self._sink.drain()

    def _mux(self, frames: list[Any]) -> bytes:
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.drain()

    def _raw_header(self) -> bytes:
        if not self._header_pending:
            return b""
        self._header_pending = False
        data = None if self._total_samples is None else self._total_samples * 2
        return wav_header(self.sample_rate, data)


def encode_audio(
    audio: np.ndarray, fmt: AudioFormat, sample_rate: int = SAMPLE_RATE, mp3_bitrate_kbps: int = 64
) -> bytes:
    """Encode a whole waveform as one file (WAV gets exact sizes in its header)."""
    encoder = StreamingEncoder(
        fmt, sample_rate, total_samples=len(audio), mp3_bitrate_kbps=mp3_bitrate_kbps
    )
    return encoder.encode(audio) + encoder.finish()


def fix_wav_sizes(data: bytes) -> bytes:
    """Write the real sizes into a streamed WAV header once the whole file is known."""
    body = len(data) - 44
    riff, size = struct.pack("<I", 36 + body), struct.pack("<I", body)
    return data[:4] + riff + data[8:40] + size + data[44:]
