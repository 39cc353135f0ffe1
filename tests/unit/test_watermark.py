"""The Perth watermark with perth's real network: marking, detecting, and marking in pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chatterbox_serve.audio import SAMPLE_RATE, AudioFormat, change_speed, encode_audio
from chatterbox_serve.audio.decoding import AudioDecodeError
from chatterbox_serve.audio.watermark import (
    DETECTION_THRESHOLD,
    PerthWatermarker,
    WatermarkStream,
    detect_watermark,
    load_watermarker,
)
from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.engines.simulated import render_tone_speech
from chatterbox_serve.model.s3gen.streaming import join_discontinuity_dbfs
from tests.voice_audio import NOT_AUDIO, corrupt, encode, sample, truncated

# The bound the streaming S3Gen joins meet (tests/model/test_s3gen_streaming.py).
JOIN_BOUND_DBFS = -40.0


@pytest.fixture(scope="module")
def marker() -> PerthWatermarker:
    return load_watermarker()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """The three real Chatterbox speech samples, 14.7 s at 24 kHz."""
    from chatterbox_serve.audio.decoding import decode_untrusted

    clips = [decode_untrusted(sample(i), sample_rate=SAMPLE_RATE).samples[0] for i in range(3)]
    return np.concatenate(clips)


def test_marked_speech_is_detected_and_clean_speech_is_not(
    marker: PerthWatermarker, speech: np.ndarray
) -> None:
    marked = marker.apply(speech)
    assert marked.dtype == np.float32 and marked.shape == speech.shape
    assert marker.confidence(marked) > 0.99
    assert marker.confidence(speech) < 0.1
    # A change, but a quiet one: perth's mark sits below 2 kHz, under the speech.
    change = np.sqrt(np.mean((marked - speech) ** 2)) / np.sqrt(np.mean(speech**2))
    assert 0.01 < change < 0.3


def test_the_simulated_engines_tones_carry_the_mark(marker: PerthWatermarker) -> None:
    tone = render_tone_speech(SynthesisRequest(text="Hello there, a test.", language="en"), 15.0)
    assert marker.confidence(marker.apply(tone)) > 0.99


def test_the_mark_survives_every_format_and_speed(
    marker: PerthWatermarker, speech: np.ndarray
) -> None:
    from chatterbox_serve.audio import decode_audio

    marked = marker.apply(speech[: 5 * SAMPLE_RATE])
    for speed in (0.5, 2.0):
        assert marker.confidence(change_speed(marked, speed)) > DETECTION_THRESHOLD
    for fmt in (AudioFormat.MP3, AudioFormat.OPUS, AudioFormat.AAC):
        samples, rate, _ = decode_audio(encode_audio(marked, fmt))
        assert marker.confidence(samples[0], rate) > DETECTION_THRESHOLD, fmt


def test_empty_short_and_silent_audio(marker: PerthWatermarker) -> None:
    assert marker.apply(np.zeros(0, dtype=np.float32)).shape == (0,)
    assert marker.apply(np.full(10, 0.1, dtype=np.float32)).shape == (10,)
    # No frame above perth's level mask: nothing to decide on, so not marked.
    assert marker.confidence(np.zeros(SAMPLE_RATE, dtype=np.float32)) == 0.0


def _pieces(audio: np.ndarray, size: int) -> list[np.ndarray]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


@pytest.mark.parametrize("size", [4_800, 12_000])
def test_a_chunk_marked_in_pieces_joins_within_the_streaming_bound(
    marker: PerthWatermarker, speech: np.ndarray, size: int
) -> None:
    whole = marker.apply(speech)
    stream = WatermarkStream(marker)
    pieces = _pieces(speech, size)
    out = [stream.mark(p, ends=k == len(pieces) - 1) for k, p in enumerate(pieces)]
    streamed = np.concatenate(out)
    assert streamed.shape == speech.shape
    assert len(out[0]) == size - WatermarkStream.HOLD  # held back for the next join
    assert marker.confidence(streamed) > 0.99
    tensors = [torch.from_numpy(p) for p in out]
    assert join_discontinuity_dbfs(tensors, torch.from_numpy(whole), 0) <= JOIN_BOUND_DBFS


def test_pieces_marked_on_their_own_break_the_bound(
    marker: PerthWatermarker, speech: np.ndarray
) -> None:
    """Planted: each piece marked alone, without context or crossfade."""
    whole = marker.apply(speech)
    alone = [torch.from_numpy(marker.apply(p)) for p in _pieces(speech, 4_800)]
    assert join_discontinuity_dbfs(alone, torch.from_numpy(whole), 0) > JOIN_BOUND_DBFS


def test_a_whole_chunk_is_marked_as_in_one_pass(
    marker: PerthWatermarker, speech: np.ndarray
) -> None:
    stream = WatermarkStream(marker)
    first, second = speech[:48_000], speech[48_000:96_000]
    assert np.array_equal(stream.mark(first, ends=True), marker.apply(first))
    # A closed chunk leaves nothing behind for the next one.
    assert np.array_equal(stream.mark(second, ends=True), marker.apply(second))


def test_detect_answers_for_files(marker: PerthWatermarker, speech: np.ndarray) -> None:
    clean = sample(1)
    found = detect_watermark(clean)
    assert not found.watermarked and found.confidence < DETECTION_THRESHOLD
    marked = encode_audio(marker.apply(speech[: 4 * SAMPLE_RATE]), AudioFormat.FLAC)
    found = detect_watermark(marked)
    assert found.watermarked and found.confidence > 0.99


@pytest.mark.parametrize("data", [NOT_AUDIO, corrupt(), b""], ids=["text", "corrupt", "empty"])
def test_detect_refuses_what_is_not_audio(data: bytes) -> None:
    with pytest.raises(AudioDecodeError) as caught:
        detect_watermark(data, "file")
    assert caught.value.param == "file"


def test_detect_keeps_the_voice_upload_caps() -> None:
    with pytest.raises(AudioDecodeError, match="limit is 60"):
        detect_watermark(encode(61.0, fmt="flac", codec="flac", amplitude=0.0))
    # A truncated file decodes as far as it goes, as voice uploads do before their own
    # length checks; the answer is about what is there.
    assert detect_watermark(truncated()).confidence >= 0.0


def test_perths_own_watermarker_agrees_where_torchaudio_loads(
    marker: PerthWatermarker, speech: np.ndarray
) -> None:
    """With a torchaudio that loads (the GPU image's torch 2.11), perth's own class
    detects our mark and marks audio as we do; torch 2.13's CPU wheel has none."""
    try:
        import torchaudio  # noqa: F401
        from perth.perth_net.perth_net_implicit.perth_watermarker import (
            PerthImplicitWatermarker,
        )
    except (ImportError, OSError) as exc:
        pytest.skip(f"perth's own watermarker does not import here: {exc!r}")
    theirs = PerthImplicitWatermarker()
    clip = speech[: 4 * SAMPLE_RATE]
    ours = marker.apply(clip)
    assert theirs.get_watermark(ours, sample_rate=SAMPLE_RATE, round=False) > 0.99
    reference = theirs.apply_watermark(clip, sample_rate=SAMPLE_RATE)
    n = min(len(reference), len(ours))
    assert np.abs(reference[:n] - ours[:n]).max() < 1e-3
