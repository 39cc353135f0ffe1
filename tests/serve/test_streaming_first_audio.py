"""First audio before the first chunk is done, through Serve.

The simulated engine streams here as the vllm engine does (`CHATTERBOX_SIM_STREAMING`):
one sentence, one chunk, whose engine call costs 1.5 s; the model yields its first
0.4 s of audio after its share of that cost. So this proves the serving path: the
model deployment's streaming method, the Serve streaming handle between the audio
deployment and the model, and the pipeline sending pieces of a chunk as they come.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from chatterbox_serve.audio import decode_audio
from tests.serve.conftest import ServeApp, start_app

SENTENCE = "A single sentence that the model speaks in several pieces."
MARKER = "<<simulate-engine-failure>>"


@pytest.fixture(scope="module")
def app() -> Iterator[ServeApp]:
    yield from start_app(
        {
            "CHATTERBOX_SIM_STREAMING": "true",
            "CHATTERBOX_SIM_BASE_S": "1.5",
            "CHATTERBOX_SIM_PER_ITEM_S": "0",
            "CHATTERBOX_SIM_PER_CHAR_S": "0",
            "CHATTERBOX_STREAM_FIRST_TOKENS": "10",
        }
    )


def _stream(app: ServeApp, body: dict[str, object]) -> tuple[int, list[tuple[float, bytes]]]:
    arrivals: list[tuple[float, bytes]] = []
    began = time.monotonic()
    with (
        app.client() as c,
        c.stream("POST", "/v1/audio/speech", json={"stream_format": "audio", **body}) as r,
    ):
        status = r.status_code
        for piece in r.iter_raw():
            arrivals.append((time.monotonic() - began, piece))
    return status, arrivals


def test_first_audio_leaves_long_before_the_chunk_is_done(app: ServeApp) -> None:
    status, arrivals = _stream(app, {"input": SENTENCE, "response_format": "wav"})
    assert status == 200
    first, last = arrivals[0][0], arrivals[-1][0]
    # The chunk costs 1.5 s; its first piece is due after about a tenth of that.
    assert last - first > 0.8, arrivals
    streamed, _, _ = decode_audio(b"".join(p for _, p in arrivals))
    with app.client() as c:
        whole = c.post("/v1/audio/speech", json={"input": SENTENCE, "response_format": "wav"})
    assert whole.status_code == 200
    # One valid file, as long as the whole-file response and with the same samples but for
    # the watermark: the streamed chunk is marked piece by piece, the file's in one pass.
    # They differ by no step above the streaming join bound (-40 dBFS), anywhere.
    reference, _, _ = decode_audio(whole.content)
    assert streamed.shape == reference.shape
    error = streamed - reference
    assert np.abs(np.diff(error)).max() <= 10 ** (-40 / 20)
    assert np.abs(error).max() < 0.02


def test_a_failing_first_chunk_is_an_error_envelope_not_a_truncated_file(app: ServeApp) -> None:
    with app.client() as c:
        r = c.post(
            "/v1/audio/speech",
            json={"input": f"Fails {MARKER} now.", "stream_format": "audio"},
        )
    assert r.status_code == 500
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_listener_who_leaves_early_does_not_break_the_next_one(app: ServeApp) -> None:
    with (
        app.client() as c,
        c.stream(
            "POST", "/v1/audio/speech", json={"input": SENTENCE, "stream_format": "audio"}
        ) as r,
    ):
        assert r.status_code == 200
        next(r.iter_raw())
    status, arrivals = _stream(app, {"input": SENTENCE, "response_format": "pcm"})
    assert status == 200 and sum(len(p) for _, p in arrivals) > 0
