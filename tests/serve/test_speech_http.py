"""The speech endpoints over real HTTP against a running Serve app (simulated engine)."""

from __future__ import annotations

import pytest

from tests.conftest import probe


@pytest.mark.parametrize(
    ("fmt", "container", "rate"),
    [("mp3", "mp3", 24000), ("opus", "ogg", 48000), ("aac", "aac", 24000),
     ("flac", "flac", 24000), ("wav", "wav", 24000)],
)
def test_each_format_decodes_with_expected_duration(serve_app, fmt, container, rate):
    text = "Hello from vLLM backend! This is a formats test."
    with serve_app.client() as c:
        r = c.post("/v1/audio/speech", json={"input": text, "response_format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["x-chatterbox-engine"] == "simulated"
    info = probe(r.content)
    assert info["container"].split(",")[0] == container
    assert info["sample_rate"] == rate
    assert info["channels"] == 1
    expected = len(text) / 15.0
    assert abs(info["duration_s"] - expected) < 0.25, info
