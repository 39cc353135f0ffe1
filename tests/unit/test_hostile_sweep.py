"""The live sweep's own instruments: they must see what they are meant to catch."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

import av

from tools.hostile_sweep import _flac_with, _wav_header, cases, store_files, udp_ports


def test_a_udp_socket_of_the_watched_process_tree_is_seen() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert port in udp_ports({os.getpid()}) and port in udp_ports(None)
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
        try:
            assert port not in udp_ports({other.pid})
        finally:
            other.kill()
            other.wait()


def test_store_changes_are_seen(tmp_path) -> None:
    before = store_files(tmp_path)
    (tmp_path / "voices" / "v1").mkdir(parents=True)
    (tmp_path / "voices" / "v1" / "audio.wav").write_bytes(b"x")
    assert set(store_files(tmp_path)) - set(before) == {"voices/v1/audio.wav"}


def test_the_hostile_headers_declare_what_they_claim() -> None:
    with av.open(io.BytesIO(_flac_with((1 << 36) - 1))) as c:
        stream = c.streams.audio[0]
        assert stream.duration == (1 << 36) - 1  # about 99 days at 8 kHz
    rate = int.from_bytes(_wav_header(2**31 - 1, 1)[24:28], "little")
    channels = int.from_bytes(_wav_header(8000, 200)[22:24], "little")
    assert (rate, channels) == (2**31 - 1, 200)


def test_every_case_has_a_unique_name_and_expects_no_5xx() -> None:
    all_cases = cases("voice_0123456789abcdef")
    assert len({c.name for c in all_cases}) == len(all_cases) >= 30
    assert all(s < 500 for c in all_cases for s in c.expect)
