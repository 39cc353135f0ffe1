"""Voices survive a full Serve restart and stay usable."""

from __future__ import annotations

from tests.serve.conftest import start_app
from tests.voice_audio import sample


def test_voices_persist_across_a_serve_restart(tmp_path):
    settings = {"VOICE_LIBRARY_DIR": str(tmp_path / "voices"), "CHATTERBOX_SIM_BASE_S": 0.01}
    body = {"input": "Guten Tag.", "voice": "kept-alias", "response_format": "wav"}
    first = start_app(settings=settings)
    app = next(first)
    try:
        with app.client() as c:
            assert (
                c.post(
                    "/voices",
                    data={"voice_name": "kept", "language": "de"},
                    files={"voice_file": ("s.mp3", sample(1), "audio/mpeg")},
                ).status_code
                == 201
            )
            assert c.post("/voices/kept/aliases", data={"alias": "kept-alias"}).status_code == 201
            before = c.post("/v1/audio/speech", json=body).content
    finally:
        first.close()

    second = start_app(settings=settings)
    app = next(second)
    try:
        with app.client() as c:
            voices = c.get("/voices").json()["voices"]
            assert [(v["name"], v["aliases"], v["language"]) for v in voices] == [
                ("kept", ["kept-alias"], "de")
            ]
            r = c.post("/v1/audio/speech", json=body)
            assert r.status_code == 200 and r.content == before
    finally:
        second.close()
