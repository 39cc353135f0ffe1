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
        # FFmpeg would probe plain text as its "tty" demuxer, which is not allowed.
        (b"<svg>not audio</svg>" * 10, "invalid_audio"),
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
    assert info.value.status_code == 400 and "supported" in info.value.message


def test_stereo_kept_when_asked() -> None:
    audio = decode_untrusted(_wav(16_000, 2, 64_000), mono=False)
    assert audio.samples.shape == (2, 16_000) and audio.source_channels == 2


# An SDP description: FFmpeg's SDP demuxer would bind the RTP port below on 127.0.0.1
# and wait for packets; about 80 bytes, like the file the review uploaded.
SDP = (
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 22222 RTP/AVP 0\r\n"
)


def _udp_ports() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
    return ports


def test_sdp_upload_is_refused_before_any_socket_is_bound() -> None:
    import threading

    assert 22222 not in _udp_ports()
    outcome: list[BaseException | None] = []

    def decode() -> None:
        try:
            decode_untrusted(SDP, param="file")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    began = time.monotonic()
    worker = threading.Thread(target=decode, daemon=True)
    worker.start()
    bound = False
    while worker.is_alive() and time.monotonic() - began < 15:
        bound = bound or 22222 in _udp_ports()
        time.sleep(0.005)
    worker.join(15)
    took = time.monotonic() - began
    assert not bound, "decoding the SDP file bound its RTP port"
    assert isinstance(outcome[0], AudioDecodeError) and outcome[0].status_code == 400
    assert took < 1.0


def _adpcm_wav(codec: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream(codec, rate=8000, layout="mono")
        fmt = stream.codec_context.format.name
        tone = (0.3 * np.sin(np.arange(16_000) / 8000 * 2 * np.pi * 220) * 32767).astype(np.int16)
        size = stream.codec_context.frame_size or 1024
        for start in range(0, tone.size - size + 1, size):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + size], format=fmt, layout="mono"
            )
            frame.sample_rate = 8000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize("codec", ["g726", "adpcm_ima_wav", "adpcm_ms"])
def test_wav_with_a_codec_outside_the_allow_list_is_refused(codec: str) -> None:
    with pytest.raises(AudioDecodeError) as info:
        decode_untrusted(_adpcm_wav(codec))
    assert info.value.code == "unsupported_audio" and info.value.status_code == 400


def _worst_case_flac() -> bytes:
    """59.5 s at 192 kHz in 8 channels: a 1 s tone on one channel, then digital silence."""
    rate, layout = 192_000, "7.1"
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout=layout)
        block = np.zeros((8, rate // 2), dtype=np.int16)
        tone = (0.5 * np.sin(np.arange(rate // 2) / rate * 2 * np.pi * 440) * 32767).astype(
            np.int16
        )
        for i in range(119):
            block[0] = tone if i < 2 else 0
            # FLAC's encoder takes packed (interleaved) samples.
            packed = np.ascontiguousarray(block.T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


_PEAK_PROBE = r"""
import sys, pathlib
from chatterbox_serve.voices.validation import inspect_audio
data = pathlib.Path(sys.argv[1]).read_bytes()
inspect_audio(data)  # warm up: codec tables, numpy buffers, lazy imports
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
before = rss("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to now
facts = inspect_audio(data)
print(facts.sample_rate, facts.channels, rss("VmHWM:") - before)
"""


def test_worst_case_upload_peaks_under_32_mib(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = _worst_case_flac()
    assert len(data) < 10 * MIB
    path = tmp_path / "worst.flac"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    rate, channels, peak = (int(v) for v in done.stdout.split())
    assert (rate, channels) == (192_000, 8)
    assert peak <= 32 * MIB, f"one worst-case upload raised RSS by {peak / MIB:.1f} MiB"
