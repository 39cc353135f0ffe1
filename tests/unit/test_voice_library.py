"""The voice library over real stores: CRUD, aliases, default, races and crashes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatterbox_serve.errors import (
    ChatterboxError,
    ConflictError,
    InvalidRequestError,
    PayloadTooLargeError,
    VoiceNotFoundError,
)
from chatterbox_serve.voices.library import VoiceLibrary
from chatterbox_serve.voices.resolve import resolve_voice
from chatterbox_serve.voices.store import LocalVoiceStore
from tests.moto_s3 import moto_s3_server, new_bucket_store, open_store
from tests.voice_audio import NOT_AUDIO, corrupt, encode, sample, truncated


@pytest.fixture
def library(tmp_path) -> VoiceLibrary:
    return VoiceLibrary(LocalVoiceStore(tmp_path / "voices"))


def test_upload_list_get_and_download(library):
    entry = library.add_voice("my-voice", sample(0), language="fr", original_filename="s.mp3")
    assert library.get_voice("my-voice") == entry
    record = entry.record
    assert entry.name == "my-voice" and entry.filename == "my-voice.mp3"
    assert record.original_filename == "s.mp3" and record.language == "fr"
    assert record.file_size == len(sample(0)) and entry.aliases == ()
    assert record.sha256 == hashlib.sha256(sample(0)).hexdigest()
    assert record.duration_s == pytest.approx(5.72, abs=0.05)
    assert record.upload_date.startswith("20")
    found, data = library.audio("my-voice")
    assert data == sample(0) and found.record.media_type == "audio/mpeg"
    assert [e.name for e in library.list_voices()] == ["my-voice"]


def test_list_is_newest_first(library):
    for i, name in enumerate(["first", "second", "third"]):
        library.add_voice(name, sample(i))
    names = [e.name for e in library.list_voices()]
    assert names[0] == "third" or len({e.record.created_at for e in library.list_voices()}) == 1
    assert sorted(names) == ["first", "second", "third"]


def test_speech_resolution_by_name_alias_and_id(library):
    entry = library.add_voice("narrator", sample(1), language="de")
    library.add_alias("narrator", "nar")
    for key in ("narrator", "nar", entry.record.id):
        voice = resolve_voice(key, library)
        assert voice.prompt is not None and voice.prompt.audio == sample(1)
        assert voice.prompt.sha256 == hashlib.sha256(sample(1)).hexdigest()
        assert voice.language == "de"
    with pytest.raises(VoiceNotFoundError):
        resolve_voice("unknown", library)


def test_names_keep_their_case_but_are_unique_without_it(library):
    library.add_voice("Voice", sample(0))
    with pytest.raises(ConflictError) as info:
        library.add_voice("voice", sample(1))
    assert info.value.code == "voice_exists"
    assert library.find("VOICE").prompt.audio == sample(0)
    assert [e.name for e in library.list_voices()] == ["Voice"]


def _nothing_stored(library: VoiceLibrary) -> bool:
    return library.store.list("voices/") == [] and library.store.list("names/") == []


@pytest.mark.parametrize(
    ("name", "data", "error", "code"),
    [
        ("ok", corrupt, InvalidRequestError, "invalid_audio"),
        ("ok", truncated, InvalidRequestError, "invalid_audio"),
        ("ok", lambda: NOT_AUDIO, InvalidRequestError, "invalid_audio"),
        ("ok", lambda: encode(0.3), InvalidRequestError, "audio_too_short"),
        ("ok", lambda: encode(180), InvalidRequestError, "audio_too_long"),
        ("ok", lambda: encode(5, amplitude=0), InvalidRequestError, "audio_silent"),
        ("ok", lambda: b"\0" * (10 * 1_048_576 + 1), PayloadTooLargeError, "file_too_large"),
        ("../x", lambda: sample(0), InvalidRequestError, "invalid_name"),
        ("a/b", lambda: sample(0), InvalidRequestError, "invalid_name"),
        ("a\\b", lambda: sample(0), InvalidRequestError, "invalid_name"),
        ("a\x00b", lambda: sample(0), InvalidRequestError, "invalid_name"),
        ("x" * 101, lambda: sample(0), InvalidRequestError, "invalid_name"),
    ],
)
def test_bad_uploads_store_nothing(library, name, data, error, code):
    with pytest.raises(error) as info:
        library.add_voice(name, data())
    assert info.value.code == code
    assert _nothing_stored(library)


def test_unsupported_language_is_rejected(library):
    with pytest.raises(InvalidRequestError) as info:
        library.add_voice("v", sample(0), language="xx")
    assert info.value.param == "language"
    assert _nothing_stored(library)
    assert library.add_voice("v", sample(0), language="pt-BR").record.language == "pt"


def test_duplicates_and_alias_collisions_are_409(library):
    library.add_voice("alice", sample(0))
    library.add_voice("bob", sample(1))
    library.add_alias("alice", "al")
    before = library.store.list("")
    for call in (
        lambda: library.add_voice("alice", sample(2)),
        lambda: library.add_voice("al", sample(2)),
        lambda: library.add_alias("bob", "alice"),
        lambda: library.add_alias("bob", "al"),
        lambda: library.rename("bob", "al"),
        lambda: library.rename("bob", "alice"),
    ):
        with pytest.raises(ConflictError):
            call()
    assert library.store.list("") == before
    assert library.all_names() == ["al", "alice", "bob"]


def test_rename_keeps_id_aliases_and_default(library):
    entry = library.add_voice("old", sample(0))
    library.add_alias("old", "nick")
    library.set_default("old")
    renamed = library.rename("nick", "new")
    assert renamed.record.id == entry.record.id
    assert library.find("old") is None
    assert library.get_voice("new").aliases == ("nick",)
    assert library.default_entry().name == "new"
    with pytest.raises(VoiceNotFoundError):
        library.rename("old", "newer")


def test_delete_removes_voice_aliases_audio_and_default(library):
    library.add_voice("gone", sample(0))
    library.add_alias("gone", "g")
    library.set_default("g")
    library.delete("gone")
    assert library.find("gone") is None and library.find("g") is None
    assert library.default() is None and library.default_entry() is None
    assert _nothing_stored(library)
    with pytest.raises(VoiceNotFoundError):
        library.delete("gone")


def test_alias_removal(library):
    library.add_voice("v", sample(0))
    library.add_alias("v", "a1")
    library.add_alias("v", "a2")
    assert library.remove_alias("v", "a1").aliases == ("a2",)
    with pytest.raises(VoiceNotFoundError):
        library.remove_alias("v", "a1")
    with pytest.raises(VoiceNotFoundError):
        library.remove_alias("v", "v")  # a name is not an alias
    assert library.all_names() == ["a2", "v"]


def test_default_voice(library):
    assert library.default() is None
    library.add_voice("d", sample(2), language="es")
    library.set_default("d")
    voice = resolve_voice(None, library)
    assert voice.prompt.audio == sample(2) and voice.language == "es"
    assert resolve_voice("alloy", library).prompt.audio == sample(2)
    library.clear_default()
    assert resolve_voice(None, library).prompt is None


def test_replicas_share_changes_at_once(tmp_path):
    a = VoiceLibrary(LocalVoiceStore(tmp_path / "v"))
    b = VoiceLibrary(LocalVoiceStore(tmp_path / "v"))
    a.add_voice("shared", sample(0))
    assert b.find("shared").prompt.audio == sample(0)  # b caches this audio by voice id
    a.delete("shared")
    assert b.find("shared") is None
    a.add_voice("shared", sample(1))  # replaced: same name, new audio
    assert b.find("shared").prompt.audio == sample(1)


def test_library_survives_a_restart(tmp_path):
    VoiceLibrary(LocalVoiceStore(tmp_path / "v")).add_voice("kept", sample(0), language="it")
    reopened = VoiceLibrary(LocalVoiceStore(tmp_path / "v"))
    assert reopened.find("kept").language == "it"


class _CrashingStore(LocalVoiceStore):
    """A disk that dies right before the upload's commit point (fault injection)."""

    def create(self, key: str, data: bytes) -> None:
        raise KeyboardInterrupt("killed")


def test_an_upload_killed_before_commit_is_invisible(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        VoiceLibrary(_CrashingStore(tmp_path / "v")).add_voice("half", sample(0))
    after_restart = VoiceLibrary(LocalVoiceStore(tmp_path / "v"))
    assert after_restart.list_voices() == [] and after_restart.find("half") is None
    after_restart.add_voice("half", sample(1))
    assert after_restart.find("half").prompt.audio == sample(1)


class _DeleteKilledAfterTheName(LocalVoiceStore):
    """A delete that dies after taking the name, before the aliases and the folder."""

    def take(self, key: str, expected: bytes) -> bool:
        taken = super().take(key, expected)
        if json.loads(expected)["kind"] == "name":
            raise KeyboardInterrupt("killed")
        return taken


def _leave_crash_debris(root) -> set[str]:
    """Two invisible voices, as a killed upload and a killed delete leave them."""
    with pytest.raises(KeyboardInterrupt):
        VoiceLibrary(_CrashingStore(root)).add_voice("half", sample(0))
    VoiceLibrary(LocalVoiceStore(root)).add_voice("doomed", sample(2))
    VoiceLibrary(LocalVoiceStore(root)).add_alias("doomed", "doomed-alias")
    with pytest.raises(KeyboardInterrupt):
        VoiceLibrary(_DeleteKilledAfterTheName(root)).delete("doomed")
    return {k.split("/")[1] for k in LocalVoiceStore(root).list("voices/")}


def test_sweep_removes_crash_debris_and_keeps_every_live_voice(tmp_path):
    debris = _leave_crash_debris(tmp_path / "v")
    library = VoiceLibrary(LocalVoiceStore(tmp_path / "v"))
    kept = library.add_voice("kept", sample(1), language="es")
    library.add_alias("kept", "kept-alias")
    library.set_default("kept-alias")
    assert len(debris) == 2 and library.all_names() == ["kept", "kept-alias"]

    assert sorted(library.sweep_orphans(min_age_s=0)) == sorted(debris)
    _assert_consistent(library)
    assert {k.split("/")[1] for k in library.store.list("voices/")} == {kept.record.id}
    assert len(library.store.list("names/")) == 2  # kept + kept-alias; debris claims gone
    assert library.find("kept-alias").prompt.audio == sample(1)
    assert library.default().name == "kept"
    library.add_alias("kept", "doomed-alias")  # the debris alias no longer blocks the name


def test_sweep_leaves_young_voices_that_may_be_uploads_in_progress(tmp_path):
    debris = _leave_crash_debris(tmp_path / "v")
    library = VoiceLibrary(LocalVoiceStore(tmp_path / "v"))
    assert library.sweep_orphans(min_age_s=3600) == []
    assert {k.split("/")[1] for k in library.store.list("voices/")} == debris


def test_sweep_removes_only_stale_half_written_files(tmp_path):
    store = LocalVoiceStore(tmp_path / "v")
    folder = tmp_path / "v" / "voices" / "voice_abc"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".tmp-stale", folder / ".tmp-fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert store.remove_stale_temporaries(3600) == 1
    assert not stale.exists() and fresh.exists()


def _race(fn, args) -> list[object]:
    def run(arg):
        try:
            return fn(*arg)
        except ChatterboxError as exc:
            return exc

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(run, args))


def _assert_consistent(library: VoiceLibrary) -> None:
    entries = library.list_voices()
    assert library.all_names() == sorted(n for e in entries for n in (e.name, *e.aliases))
    for e in entries:
        assert library.find(e.name).prompt.sha256 == e.record.sha256
    live = {e.record.id for e in entries}
    folders = {k.split("/")[1] for k in library.store.list("voices/")}
    assert folders == live


def test_twenty_racing_uploads_of_one_name(library):
    results = _race(library.add_voice, [("same", sample(i % 3)) for i in range(20)])
    assert sum(not isinstance(r, ChatterboxError) for r in results) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 19
    assert [e.name for e in library.list_voices()] == ["same"]
    _assert_consistent(library)


def test_racing_renames_and_deletes_leave_a_consistent_library(library):
    for round_ in range(5):
        library.add_voice("src", sample(round_ % 3))
        library.add_alias("src", f"alias{round_}")
        ops = [("rename", f"dst{round_}-{i}") for i in range(6)] + [("delete", "")] * 4
        results = _race(
            lambda op, new: library.rename("src", new) if op == "rename" else library.delete("src"),
            ops,
        )
        winners = [
            (op, r)
            for (op, _), r in zip(ops, results, strict=True)
            if not isinstance(r, ChatterboxError)
        ]
        assert len(winners) == 1, results
        assert all(isinstance(r, VoiceNotFoundError) for r in results if r is not winners[0][1])
        _assert_consistent(library)
        assert library.find("src") is None
        op, entry = winners[0]
        if op == "rename":
            assert library.get_voice(entry.name).aliases == (f"alias{round_}",)
            library.delete(entry.name)
    assert library.list_voices() == []


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


def test_s3_backend_round_trip_and_races(s3_endpoint):
    store = new_bucket_store(s3_endpoint)
    # Two libraries on one bucket, as two replicas on two nodes would have.
    lib, other = VoiceLibrary(store), VoiceLibrary(open_store(s3_endpoint, store.url))
    upload = lambda name, data: lib.add_voice(name, data, language="fr")  # noqa: E731
    results = _race(upload, [("s3-voice", sample(0)) for _ in range(20)])
    assert sum(isinstance(r, ConflictError) for r in results) == 19
    lib.add_alias("s3-voice", "s3-alias")
    assert other.find("s3-alias").prompt.audio == sample(0)
    assert other.find("s3-alias").language == "fr"
    lib.rename("s3-voice", "renamed")
    assert other.find("s3-voice") is None and other.get_voice("renamed").aliases == ("s3-alias",)
    _assert_consistent(other)
    lib.delete("renamed")
    assert other.list_voices() == [] and _nothing_stored(other)


class _FullDisk(LocalVoiceStore):
    """A disk that fills up between the audio write and the record write."""

    def put(self, key: str, data: bytes) -> None:
        if key.endswith("voice.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        super().put(key, data)


def test_a_failed_upload_leaves_nothing_behind(tmp_path):
    store = _FullDisk(tmp_path / "v")
    with pytest.raises(OSError) as info:
        VoiceLibrary(store).add_voice("full", sample(0))
    assert info.value.errno == errno.ENOSPC
    assert store.list("voices/") == [] and store.list("names/") == []


def test_sweep_removes_record_less_folders_once_old(tmp_path):
    store = LocalVoiceStore(tmp_path / "v")
    store.put("voices/voice_old1/audio.mp3", sample(0))
    store.put("voices/voice_new1/audio.mp3", sample(1))
    old = time.time() - 7200
    os.utime(tmp_path / "v/voices/voice_old1/audio.mp3", (old, old))
    library = VoiceLibrary(store)
    assert library.sweep_orphans(min_age_s=3600) == ["voice_old1"]
    assert store.list("voices/") == ["voices/voice_new1/audio.mp3"]


def test_a_lookup_the_store_cannot_make_is_not_found(library):
    assert library.find("x" * 5000) is None  # ENAMETOOLONG from the filesystem
    assert library.find("voice_" + "a" * 5000, by_id=True) is None


def test_names_are_nfc_and_reserved_names_are_caseless(library):
    nfd, nfc = "cafe\u0301", "caf\u00e9"
    library.add_voice(nfd, sample(0))
    with pytest.raises(ConflictError):
        library.add_voice(nfc, sample(1))
    assert library.get_voice(nfc).name == nfc and library.find(nfd) is not None
    for reserved in ("Default", "DEFAULT", "All-Names"):
        with pytest.raises(InvalidRequestError) as info:
            library.add_voice(reserved, sample(1))
        assert info.value.code == "reserved_name"


def test_voice_audio_cache_is_bounded_by_bytes(tmp_path):
    library = VoiceLibrary(LocalVoiceStore(tmp_path / "v"), audio_cache_bytes=len(sample(0)) + 1)
    library.add_voice("one", sample(0))
    library.add_voice("two", sample(1))
    library.find("one")
    library.find("two")
    assert library._audio_cached <= len(sample(0)) + 1
    assert library.find("one").prompt.audio == sample(0)  # evicted ones read back fine


def test_voices_and_aliases_per_library_are_capped(tmp_path):
    library = VoiceLibrary(LocalVoiceStore(tmp_path / "v"), max_voices=2, max_aliases_per_voice=1)
    library.add_voice("one", sample(0))
    library.add_voice("two", sample(1))
    with pytest.raises(ConflictError) as info:
        library.add_voice("three", sample(2))
    assert info.value.code == "voice_limit_reached"
    library.add_alias("one", "uno")
    with pytest.raises(ConflictError) as info:
        library.add_alias("one", "eins")
    assert info.value.code == "alias_limit_reached"
    library.delete("two")
    library.add_voice("three", sample(2))  # room again after a delete
