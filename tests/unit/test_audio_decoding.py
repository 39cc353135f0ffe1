"""Bounded decoding of untrusted uploads: real clips decode, hostile files are refused cheaply."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from chatterbox_serve.audio.decoding import AudioDecodeError, DecodeLimits, decode_untrusted
from chatterbox_serve.errors import PayloadTooLargeError

MIB = 1_048_576


def _wav(rate: int, channels: int, real_bytes: int, declared: int | None = None) -> bytes:
    """A PCM16 WAV whose header may lie about its data size."""
    size = real_bytes if declared is None else declared
    fmt = struct.pack(
        "<IHHIIHH",
        16,
        1,
        channels,
        rate,
        (rate * channels * 2) & 0xFFFFFFFF,
        (channels * 2) & 0xFFFF,
        16,
    )
    header = b"RIFF" + struct.pack("<I", (36 + size) & 0xFFFFFFFF) + b"WAVEfmt " + fmt
    return header + b"data" + struct.pack("<I", size) + b"\x01\x00" * (real_bytes // 2)


def _flac_silence(seconds: int, rate: int = 8000, hide_length: bool = False) -> bytes:
    """A FLAC bomb: `seconds` of silence in a few hundred kilobytes."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        block = np.zeros((1, rate * 10), dtype=np.int16)
        for _ in range(seconds // 10):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(buf.getvalue())
    if hide_length:  # zero STREAMINFO's 36-bit total-samples field: "length unknown"
        data[8 + 13] &= 0xF0
        data[8 + 14 : 8 + 18] = b"\0\0\0\0"
    return bytes(data)


def _measured(fn: Callable[[], object]) -> tuple[BaseException | None, float, float]:
    """Run `fn`; return what it raised, seconds taken and peak traced MiB."""
    tracemalloc.start()
    began = time.monotonic()
    raised: BaseException | None = None
    try:
        fn()
    except Exception as exc:
        raised = exc
    took = time.monotonic() - began
    peak = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    return raised, took, peak


def test_a_real_voice_clip_decodes_to_mono_float(shared_dir: Path) -> None:
    data = (shared_dir / "data/voices/chatterbox-sample-01.mp3").read_bytes()
    audio = decode_untrusted(data)
    assert audio.container == "mp3" and audio.sample_rate == audio.source_rate == 24_000
    assert audio.samples.dtype == np.float32 and audio.samples.shape[0] == 1
    assert 3.0 < audio.duration_s < 30.0
    assert 0.01 < float(np.abs(audio.samples).max()) < 1.5  # MP3 may overshoot 1.0 a little


def test_resamples_to_a_target_rate(shared_dir: Path) -> None:
    data = (shared_dir / "data/voices/chatterbox-sample-01.mp3").read_bytes()
    native, at16k = decode_untrusted(data), decode_untrusted(data, sample_rate=16_000)
    assert at16k.sample_rate == 16_000
    assert abs(at16k.duration_s - native.duration_s) < 0.05


def test_flac_bomb_with_declared_length_is_refused_before_decoding() -> None:
    bomb = _flac_silence(3600)  # one hour, about 650 KB
    assert len(bomb) < MIB
    raised, took, peak = _measured(lambda: decode_untrusted(bomb))
    assert isinstance(raised, AudioDecodeError) and raised.code == "audio_too_long"
    assert took < 0.5 and peak < 5


def test_flac_bomb_hiding_its_length_stops_at_the_duration_cap() -> None:
    bomb = _flac_silence(3600, hide_length=True)
    raised, took, peak = _measured(lambda: decode_untrusted(bomb, DecodeLimits(max_duration_s=30)))
    assert isinstance(raised, AudioDecodeError) and raised.code == "audio_too_long"
    assert "decodes to" in raised.message
    # The hour would be 110 MiB of float32; decoding stops after about 31 s of it.
    assert took < 3 and peak < 10


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_wav(2**31 - 1, 1, 4000), "unsupported_sample_rate"),
        (_wav(1_000_000, 1, 4000), "unsupported_sample_rate"),
        (_wav(24_000, 200, 40_000), "unsupported_channels"),
        (_wav(8000, 1, 8000 * 2 * 70), "audio_too_long"),
        (_wav(0, 1, 4000), "invalid_audio"),
        (_wav(24_000, 1, 48_000)[:30], "invalid_audio"),
        (b"\x00\xff" * 1000, "invalid_audio"),
        # FFmpeg probes plain text as its "tty" demuxer, which the allow-list refuses.
        (b"<svg>not audio</svg>" * 10, "unsupported_audio"),
    ],
    ids=[
        "rate-2^31",
        "rate-1MHz",
        "200-channels",
        "70s-declared",
        "rate-0",
        "truncated",
        "noise",
        "text",
    ],
)
def test_absurd_headers_and_junk_are_refused_cheaply(data: bytes, code: str) -> None:
    raised, took, peak = _measured(lambda: decode_untrusted(data, param="voice_file"))
    assert isinstance(raised, AudioDecodeError), raised
    assert raised.code == code and raised.param == "voice_file" and raised.status_code == 400
    assert took < 0.5 and peak < 5


def test_a_lying_data_size_allocates_only_what_is_there() -> None:
    # 0xFFFFFFF0 declared bytes, 4000 real: streamed WAVs declare an unknown size this way.
    raised, _, peak = _measured(lambda: decode_untrusted(_wav(24_000, 1, 4000, 0xFFFFFFF0)))
    assert raised is None and peak < 5
    assert decode_untrusted(_wav(24_000, 1, 4000, 0xFFFFFFF0)).samples.shape == (1, 2000)


def test_byte_cap_is_413_and_checked_first() -> None:
    with pytest.raises(PayloadTooLargeError):
        decode_untrusted(b"\0" * 2048, DecodeLimits(max_bytes=1024))


def test_empty_file_is_400() -> None:
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_untrusted(b"")


def test_time_budget_stops_a_slow_decode(shared_dir: Path) -> None:
    data = (shared_dir / "data/voices/chatterbox-sample-01.mp3").read_bytes()
    with pytest.raises(AudioDecodeError) as info:
        decode_untrusted(data, DecodeLimits(time_budget_s=0.0))
    assert info.value.code == "audio_decode_timeout"


def test_container_outside_the_allow_list_is_refused() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="au") as out:  # Sun AU: decodable, but not allowed
        stream = out.add_stream("pcm_s16be", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    with pytest.raises(AudioDecodeError) as info:
        decode_untrusted(buf.getvalue())
    assert info.value.code == "unsupported_audio"


def test_stereo_kept_when_asked() -> None:
    audio = decode_untrusted(_wav(16_000, 2, 64_000), mono=False)
    assert audio.samples.shape == (2, 16_000) and audio.source_channels == 2
