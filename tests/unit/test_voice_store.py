"""Both voice stores keep the same contract: atomic put, exclusive create, compare-and-delete."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatterbox_serve.config import VoiceConfig
from chatterbox_serve.voices.store import (
    LocalVoiceStore,
    S3VoiceStore,
    VoiceStore,
    build_voice_store,
)
from tests.moto_s3 import moto_s3_server, new_bucket_store


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, s3_endpoint) -> VoiceStore:
    if request.param == "local":
        return LocalVoiceStore(tmp_path / "lib")
    return new_bucket_store(s3_endpoint)


def test_put_get_list_delete(store):
    store.put("voices/v1/voice.json", b"{}")
    store.put("voices/v1/audio.mp3", b"abc")
    store.put("names/n.json", b"n")
    assert store.get("voices/v1/audio.mp3") == b"abc"
    assert store.list("voices/") == ["voices/v1/audio.mp3", "voices/v1/voice.json"]
    store.put("voices/v1/audio.mp3", b"replaced")
    assert store.get("voices/v1/audio.mp3") == b"replaced"
    store.delete("voices/v1/audio.mp3")
    store.delete("voices/v1/audio.mp3")  # deleting twice is fine
    with pytest.raises(FileNotFoundError):
        store.get("voices/v1/audio.mp3")
    assert store.get_many(["names/n.json", "names/missing.json"]) == {"names/n.json": b"n"}
    assert store.list("nothing/") == []


def test_create_is_exclusive(store):
    store.create("names/a.json", b"first")
    with pytest.raises(FileExistsError):
        store.create("names/a.json", b"second")
    assert store.get("names/a.json") == b"first"


def test_take_deletes_only_the_expected_bytes(store):
    store.create("names/a.json", b"mine")
    assert not store.take("names/a.json", b"someone else's")
    assert store.get("names/a.json") == b"mine"
    assert store.take("names/a.json", b"mine")
    assert not store.take("names/a.json", b"mine")
    assert store.list("names/") == []


def test_racing_creates_have_exactly_one_winner(store):
    def attempt(i: int) -> int:
        try:
            store.create("names/race.json", f"writer {i}".encode())
            return i
        except FileExistsError:
            return -1

    with ThreadPoolExecutor(20) as pool:
        winners = [i for i in pool.map(attempt, range(20)) if i >= 0]
    assert len(winners) == 1
    assert store.get("names/race.json") == f"writer {winners[0]}".encode()


def test_racing_takes_have_exactly_one_winner(store):
    store.create("names/race.json", b"claim")
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: store.take("names/race.json", b"claim"), range(10)))
    assert results.count(True) == 1


@pytest.mark.parametrize("key", ["../x", "a/../../b", "/abs", "", "names/.tmp-x"])
def test_keys_cannot_escape_the_root(tmp_path, key):
    store = LocalVoiceStore(tmp_path / "lib")
    with pytest.raises(ValueError):
        store.put(key, b"x")


def test_local_store_leaves_no_temp_files(tmp_path):
    store = LocalVoiceStore(tmp_path / "lib")
    store.put("voices/v/audio.wav", b"a")
    store.create("names/n.json", b"n")
    with pytest.raises(FileExistsError):
        store.create("names/n.json", b"n2")
    files = sorted(p.name for p in (tmp_path / "lib").rglob("*") if p.is_file())
    assert files == [".lock", "audio.wav", "n.json"] or files == ["audio.wav", "n.json"]


def test_settings_pick_the_backend(tmp_path, s3_endpoint):
    local = build_voice_store(VoiceConfig(voice_library_dir=str(tmp_path / "v")))
    assert isinstance(local, LocalVoiceStore)
    assert (tmp_path / "v").is_dir()
    remote = build_voice_store(
        VoiceConfig(voice_library_url="s3://bucket/prefix", s3_endpoint_url=s3_endpoint)
    )
    assert isinstance(remote, S3VoiceStore)
    assert remote.root == "bucket/prefix"
