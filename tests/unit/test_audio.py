import io
import struct

import numpy as np
import pytest
import soundfile

from chatterbox_serve.audio import (
    AudioFormat,
    Stitcher,
    StreamingEncoder,
    change_speed,
    decode_audio,
    encode_audio,
    to_pcm16,
)
from tests.conftest import probe

SR = 24_000


def _tone(seconds: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


EXPECTED = {
    AudioFormat.MP3: ("mp3", "mp3", "audio/mpeg", 24000),
    AudioFormat.OPUS: ("ogg", "opus", "audio/ogg", 48000),  # Opus always decodes at 48 kHz
    AudioFormat.AAC: ("aac", "aac", "audio/aac", 24000),
    AudioFormat.FLAC: ("flac", "flac", "audio/flac", 24000),
    AudioFormat.WAV: ("wav", "pcm_s16le", "audio/wav", 24000),
}


@pytest.mark.parametrize("fmt", list(EXPECTED))
def test_whole_file_decodes_as_its_format(fmt):
    container, codec, media, rate = EXPECTED[fmt]
    info = probe(encode_audio(_tone(2.0), fmt))
    assert info["container"].split(",")[0] == container
    assert info["codec"].startswith(codec) or codec.startswith(info["codec"])
    assert info["sample_rate"] == rate and info["channels"] == 1
    assert abs(info["duration_s"] - 2.0) < 0.1
    assert fmt.media_type == media


@pytest.mark.parametrize("fmt", list(EXPECTED))
def test_streamed_pieces_concatenate_into_one_valid_file(fmt):
    audio = _tone(3.0)
    enc = StreamingEncoder(fmt)
    pieces = [enc.encode(audio[i : i + 9000]) for i in range(0, len(audio), 9000)]
    pieces.append(enc.finish())
    assert sum(1 for p in pieces[:-1] if p) >= 3  # bytes come out before the end
    assert abs(probe(b"".join(pieces))["duration_s"] - 3.0) < 0.1


def test_whole_wav_has_exact_header_sizes_and_soundfile_reads_it():
    data = encode_audio(_tone(1.0), AudioFormat.WAV)
    (riff,) = struct.unpack("<I", data[4:8])
    (size,) = struct.unpack("<I", data[40:44])
    assert riff == len(data) - 8 and size == len(data) - 44
    samples, rate = soundfile.read(io.BytesIO(data))
    assert rate == SR and len(samples) == SR


def test_pcm_is_raw_s16le():
    audio = np.array([0.0, 0.5, -0.5, 1.5], dtype=np.float32)
    data = encode_audio(audio, AudioFormat.PCM)
    assert np.frombuffer(data, "<i2").tolist() == [0, 16383, -16383, 32767]
    assert to_pcm16(audio) == data


def test_encoder_refuses_use_after_finish():
    enc = StreamingEncoder(AudioFormat.MP3)
    enc.finish()
    with pytest.raises(RuntimeError):
        enc.encode(_tone(0.1))


def test_stitcher_streaming_equals_whole_and_keeps_length():
    chunks = [_tone(0.5, 200), _tone(0.7, 300), _tone(0.4, 250)]
    st = Stitcher(SR, crossfade_ms=25)
    out = np.concatenate([st.push(c) for c in chunks] + [st.flush()])
    fade = int(SR * 0.025)
    assert len(out) == sum(len(c) for c in chunks) - 2 * fade
    # Equal-power crossfade: no click, the join never exceeds the sum of the parts.
    assert np.abs(out).max() <= 0.3 * np.sqrt(2) + 1e-4


def test_stitcher_without_fade_is_plain_concatenation():
    a, b = _tone(0.1), _tone(0.2)
    st = Stitcher(SR, crossfade_ms=0)
    out = np.concatenate([st.push(a), st.push(b), st.flush()])
    assert np.array_equal(out, np.concatenate([a, b]))


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_speed_changes_duration_and_keeps_pitch(speed):
    audio = _tone(2.0, 440.0)
    out = change_speed(audio, speed)
    assert abs(len(out) / SR - 2.0 / speed) < 0.05
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spectrum) * SR / len(out)
    assert abs(peak_hz - 440.0) < 10.0


def test_speed_one_is_identity():
    audio = _tone(0.3)
    same = change_speed(audio, 1.0)
    assert same.dtype == np.float32 and np.array_equal(same, audio)


def test_decode_audio_reads_every_format_back():
    audio = _tone(1.0)
    for fmt in (AudioFormat.WAV, AudioFormat.FLAC, AudioFormat.MP3):
        samples, rate, channels = decode_audio(encode_audio(audio, fmt))
        assert rate == SR and channels == 1
        assert abs(samples.shape[1] - SR) < 2000
