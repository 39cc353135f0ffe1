"""Upload checks: names, size limits and decoding of good and bad audio."""

from __future__ import annotations

import io

import pytest

from chatterbox_serve.errors import InvalidRequestError, PayloadTooLargeError
from chatterbox_serve.voices.validation import inspect_audio, read_bounded, validate_name
from tests.voice_audio import NOT_AUDIO, corrupt, encode, sample, truncated


@pytest.mark.parametrize(
    ("data", "codec", "media_type"),
    [
        (lambda: sample(0), "mp3float", "audio/mpeg"),
        (lambda: encode(3), "pcm_s16le", "audio/wav"),
        (lambda: encode(3, rate=44_100, channels=2), "pcm_s16le", "audio/wav"),
        (lambda: encode(3, fmt="flac", codec="flac"), "flac", "audio/flac"),
        (
            lambda: encode(3, fmt="ogg", codec="vorbis", rate=44_100, channels=2),
            "vorbis",
            "audio/ogg",
        ),
        (lambda: encode(3, fmt="ogg", codec="libopus", rate=48_000), "opus", "audio/ogg"),
        (lambda: encode(3, fmt="ipod", codec="aac"), "aac", "audio/mp4"),
        (lambda: encode(3, fmt="webm", codec="libopus", rate=48_000), "opus", "audio/webm"),
        (lambda: encode(3, fmt="mp3", codec="libmp3lame", rate=16_000), "mp3float", "audio/mpeg"),
    ],
)
def test_accepts_every_supported_format(data, codec, media_type):
    facts = inspect_audio(data())
    assert facts.codec == codec
    assert facts.media_type == media_type
    assert 2.9 < facts.duration_s < 6.0


def test_reports_real_sample_facts():
    facts = inspect_audio(sample(0))
    assert (facts.sample_rate, facts.channels, facts.extension) == (24_000, 1, ".mp3")
    assert facts.duration_s == pytest.approx(5.72, abs=0.05)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (corrupt, "invalid_audio"),
        (truncated, "invalid_audio"),
        (lambda: NOT_AUDIO, "invalid_audio"),
        (lambda: b"", "invalid_audio"),
        (lambda: encode(0.3), "audio_too_short"),
        (lambda: encode(180), "audio_too_long"),
        (lambda: encode(5, amplitude=0.0), "audio_silent"),
        (lambda: encode(5, amplitude=0.0005), "audio_silent"),
    ],
)
def test_rejects_bad_audio_with_a_clear_400(data, code):
    with pytest.raises(InvalidRequestError) as info:
        inspect_audio(data(), "voice_file")
    assert info.value.status_code == 400
    assert info.value.code == code
    assert info.value.param == "voice_file"


def test_rejects_long_audio_from_its_declared_length():
    # A 3-minute file is refused from its header, before its samples are decoded.
    data = encode(180, fmt="flac", codec="flac")
    with pytest.raises(InvalidRequestError) as info:
        inspect_audio(data)
    assert info.value.code == "audio_too_long"
    assert "180.0 s" in info.value.message and "60 s" in info.value.message


@pytest.mark.parametrize("name", ["my-voice", "Émilie", "声音", "a", "x" * 100, "a b.c_(1)"])
def test_accepts_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../x", "a/b", "a\\b", "a\x00b", "a\nb", "x" * 101, " lead", "tab\t"]
)
def test_rejects_names(name):
    with pytest.raises(InvalidRequestError) as info:
        validate_name(name, "voice_name")
    assert info.value.param == "voice_name"
    assert info.value.code == "invalid_name"


@pytest.mark.parametrize("name", ["default", "all-names"])
@pytest.mark.parametrize("param", ["voice_name", "new_name", "alias"])
def test_rejects_names_the_api_uses_as_paths(name, param):
    with pytest.raises(InvalidRequestError) as info:
        validate_name(name, param)
    assert (info.value.param, info.value.code) == (param, "reserved_name")
    assert name in info.value.message


class _CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_total = 0

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        chunk = super().read(size)
        self.read_total += len(chunk)
        return chunk


def test_read_bounded_stops_just_past_the_limit():
    reader = _CountingReader(b"\0" * (11 * 1_048_576))
    with pytest.raises(PayloadTooLargeError) as info:
        read_bounded(reader, 10 * 1_048_576)
    assert info.value.status_code == 413
    assert reader.read_total == 10 * 1_048_576 + 1


def test_read_bounded_returns_whole_small_files():
    assert read_bounded(io.BytesIO(sample(1)), 10 * 1_048_576) == sample(1)
