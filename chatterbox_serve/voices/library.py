"""The voice library: named reference voices, shared by every replica through a store.

Layout in the store (no global index is ever rewritten):

    voices/<id>/voice.json      immutable record: language, sizes, sha256, ...
    voices/<id>/audio.<ext>     the original upload, byte for byte
    names/<sha256(folded)>.json a claim: this name or alias points at voice <id>
    default.json                the chosen default voice's id

A voice's folder is written completely before its name claim is created, and the
claim is the commit point: readers only reach voices through claims (or by id),
so a process killed mid-upload leaves an unreachable folder, never a half voice.
Names and aliases share one claim namespace, and claims are created with the
store's exclusive `create`, so of racing uploads, renames or alias additions for
one name exactly one wins. Renames and deletes remove a claim with `take`
(compare-and-delete), so of racing renames and deletes of one voice exactly one
wins and the loser undoes its own new claim.

Names are compared caselessly: a claim is stored under the hash of its name
NFC-normalised and case-folded (`fold_name`), so `Café`, `café` and `CAFE\u0301` are
one name and the claim keeps the spelling the user gave. Claims written before this
rule sit under the hash of the exact name; they are still found by that exact
spelling, and an upload, rename or alias that folds to the same name as one of
them is refused like any duplicate.

Every lookup re-reads the claim and the record, so a deleted, renamed or replaced
voice takes effect on every replica at its next request. Only audio is cached,
keyed by voice id: a folder's bytes never change after its claim exists (a
replaced voice is a new upload with a new id).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Literal

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import VoicePrompt
from chatterbox_serve.errors import (
    ConflictError,
    InvalidRequestError,
    PayloadTooLargeError,
    VoiceNotFoundError,
)
from chatterbox_serve.text.languages import (
    DEFAULT_LANGUAGE,
    SUPPORTED_LANGUAGES,
    languages_of,
    normalize_language,
)
from chatterbox_serve.voices.resolve import ResolvedVoice
from chatterbox_serve.voices.store import VoiceStore, build_voice_store
from chatterbox_serve.voices.validation import inspect_audio, validate_name

logger = logging.getLogger(__name__)

ClaimKind = Literal["name", "alias"]


@dataclass(frozen=True)
class VoiceRecord:
    """The immutable facts stored in `voices/<id>/voice.json`."""

    id: str
    uploaded_name: str
    language: str
    audio_key: str
    media_type: str
    original_filename: str
    file_size: int
    created_at: int
    duration_s: float
    sample_rate: int
    channels: int
    sha256: str
    # The owner id of the key that uploaded it; None for a shared voice (uploaded by an
    # operator, in open mode, or before voices had owners). See `voices/access.py`.
    owner: str | None = None

    @property
    def upload_date(self) -> str:
        return datetime.fromtimestamp(self.created_at, timezone.utc).isoformat()


@dataclass(frozen=True)
class VoiceEntry:
    """A reachable voice: its record with its current name and aliases."""

    record: VoiceRecord
    name: str
    aliases: tuple[str, ...]

    @property
    def filename(self) -> str:
        return self.name + "." + self.record.audio_key.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class _Claim:
    key: str
    voice_id: str
    kind: ClaimKind
    created: float
    raw: bytes
    # Where the claim is stored: the folded name's path, or the exact name's for a
    # claim written before names were compared caselessly.
    path: str

    @staticmethod
    def new(key: str, voice_id: str, kind: ClaimKind) -> _Claim:
        # The random token makes every claim's bytes (and S3 ETag) unique, so a
        # compare-and-delete can never remove a newer claim for the same name.
        created = time.time()
        body = {
            "name": key,
            "voice_id": voice_id,
            "kind": kind,
            "created": created,
            "token": uuid.uuid4().hex,
        }
        raw = json.dumps(body).encode()
        return _Claim(key, voice_id, kind, created, raw, _claim_key(key))

    @staticmethod
    def parse(raw: bytes, path: str) -> _Claim:
        d = json.loads(raw)
        return _Claim(d["name"], d["voice_id"], d["kind"], float(d["created"]), raw, path)


def fold_name(name: str) -> str:
    """The form two names are compared in: NFC, case-folded (so `Straße` is `STRASSE`)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def _claim_key(name: str) -> str:
    return _exact_claim_key(fold_name(name))


def _exact_claim_key(name: str) -> str:
    return f"names/{hashlib.sha256(name.encode()).hexdigest()}.json"


def _record_key(voice_id: str) -> str:
    return f"voices/{voice_id}/voice.json"


class VoiceLibrary:
    """Named voices over a `VoiceStore`; implements `VoiceLookup` for speech requests.

    Methods block on storage I/O; async callers run them in a thread.
    """

    def __init__(
        self,
        store: VoiceStore,
        *,
        max_upload_bytes: int = 10 * 1_048_576,
        languages: Iterable[str] = SUPPORTED_LANGUAGES,
        audio_cache_bytes: int = 64 * 1_048_576,
        max_voices: int = 1000,
        max_aliases_per_voice: int = 16,
    ) -> None:
        self.max_voices = max_voices
        self.max_aliases_per_voice = max_aliases_per_voice
        self.store = store
        self.max_upload_bytes = max_upload_bytes
        self.languages = frozenset(languages)
        self._audio: OrderedDict[str, VoicePrompt] = OrderedDict()
        # Bounded by bytes, not entries: 64 uploads of 10 MB would be 640 MB a replica.
        self._audio_cache_bytes = audio_cache_bytes
        self._audio_cached = 0
        self._audio_lock = threading.Lock()

    # -- reading -------------------------------------------------------------

    def _claim(self, key: str) -> _Claim | None:
        key = unicodedata.normalize("NFC", key)
        folded = _claim_key(key)
        for path in dict.fromkeys([folded, _exact_claim_key(key)]):
            try:
                claim = _Claim.parse(self.store.get(path), path)
            except FileNotFoundError:
                continue
            if fold_name(claim.key) == fold_name(key) if path == folded else claim.key == key:
                return claim
        return None

    def _record(self, voice_id: str) -> VoiceRecord | None:
        if not self._valid_id(voice_id):
            return None
        try:
            return VoiceRecord(**json.loads(self.store.get(_record_key(voice_id))))
        except FileNotFoundError:
            return None

    def _claims(self) -> list[_Claim]:
        raws = self.store.get_many(self.store.list("names/"))
        return [_Claim.parse(raw, path) for path, raw in raws.items()]

    def _entries(self) -> list[VoiceEntry]:
        claims = self._claims()
        by_voice: dict[str, list[_Claim]] = {}
        for c in claims:
            by_voice.setdefault(c.voice_id, []).append(c)
        raws = self.store.get_many(_record_key(v) for v in by_voice if self._valid_id(v))
        entries = []
        for raw in raws.values():
            record = VoiceRecord(**json.loads(raw))
            entry = self._entry(record, by_voice[record.id])
            if entry is not None:
                entries.append(entry)
        return entries

    @staticmethod
    def _valid_id(voice_id: str) -> bool:
        return voice_id.startswith("voice_") and voice_id[6:].isalnum()

    @staticmethod
    def _entry(record: VoiceRecord, claims: list[_Claim]) -> VoiceEntry | None:
        names = sorted((c for c in claims if c.kind == "name"), key=lambda c: -c.created)
        if not names:  # only aliases left: a delete is under way
            return None
        aliases = tuple(sorted(c.key for c in claims if c.kind == "alias"))
        # Two name claims exist only for the instant of a rename; the newer is the name.
        return VoiceEntry(record, names[0].key, aliases)

    def _entry_for(self, key: str) -> tuple[VoiceEntry, _Claim]:
        """The voice a name or alias points at, with the name claim to act on; 404 if none.

        When `key` is a name, its own claim is the one a rename or delete must take,
        so that of racing operations on one name exactly one succeeds.
        """
        claim = self._claim(key)
        record = self._record(claim.voice_id) if claim else None
        claims = [c for c in self._claims() if record and c.voice_id == record.id]
        entry = self._entry(record, claims) if record else None
        if claim is None or entry is None:
            raise VoiceNotFoundError(f"Voice {key!r} not found.", param="name")
        if claim.kind == "name":
            return VoiceEntry(entry.record, claim.key, entry.aliases), claim
        name_claim = next(c for c in claims if c.kind == "name" and c.key == entry.name)
        return entry, name_claim

    def list_voices(self) -> list[VoiceEntry]:
        """Every reachable voice, newest first."""
        return sorted(self._entries(), key=lambda e: (-e.record.created_at, e.name))

    def get_voice(self, key: str) -> VoiceEntry:
        """A voice by name or alias; raises `VoiceNotFoundError`."""
        return self._entry_for(key)[0]

    def all_names(self) -> list[str]:
        """Every name and alias that reaches a voice."""
        return sorted(n for e in self._entries() for n in (e.name, *e.aliases))

    def audio(self, key: str) -> tuple[VoiceEntry, bytes]:
        """A voice and its original upload, byte for byte."""
        entry = self.get_voice(key)
        return entry, self._prompt(entry.record).audio

    def _prompt(self, record: VoiceRecord) -> VoicePrompt:
        with self._audio_lock:
            prompt = self._audio.get(record.id)
            if prompt is not None:
                self._audio.move_to_end(record.id)
                return prompt
        audio = self.store.get(record.audio_key)
        prompt = VoicePrompt(audio=audio, sha256=record.sha256, size=len(audio))
        with self._audio_lock:
            if record.id not in self._audio:
                self._audio[record.id] = prompt
                self._audio_cached += len(prompt.audio)
            while self._audio_cached > self._audio_cache_bytes and self._audio:
                _, dropped = self._audio.popitem(last=False)
                self._audio_cached -= len(dropped.audio)
        return prompt

    # -- VoiceLookup, for speech requests -------------------------------------

    def find(self, key: str, *, by_id: bool = False) -> ResolvedVoice | None:
        """A voice by name, alias or id (only id when `by_id`), read fresh from the store.

        A key the store cannot even look up (too long for a file name, say) names no
        voice: any `OSError` of the lookup means "not found", not a server error.
        """
        try:
            claim = None if by_id else self._claim(key)
            record = self._record(claim.voice_id if claim else key)
        except OSError:
            return None
        if record is None:
            return None
        return ResolvedVoice(
            name=claim.key if claim else record.uploaded_name,
            prompt=self._prompt(record),
            language=record.language,
            id=record.id,
            owner=record.owner,
            duration_s=record.duration_s,
        )

    def default(self) -> ResolvedVoice | None:
        voice_id = self._default_id()
        record = self._record(voice_id) if voice_id else None
        if record is None:
            return None
        return ResolvedVoice(
            name=record.uploaded_name,
            prompt=self._prompt(record),
            language=record.language,
            id=record.id,
            owner=record.owner,
            duration_s=record.duration_s,
        )

    def _default_id(self) -> str | None:
        try:
            return str(json.loads(self.store.get("default.json"))["voice_id"])
        except FileNotFoundError:
            return None

    def default_entry(self) -> VoiceEntry | None:
        """The chosen default voice, or None for the model's built-in voice."""
        voice_id = self._default_id()
        record = self._record(voice_id) if voice_id else None
        if record is None:
            return None
        return self._entry(record, [c for c in self._claims() if c.voice_id == record.id])

    # -- writing --------------------------------------------------------------

    def add_voice(
        self,
        name: str,
        data: bytes,
        *,
        language: str | None = None,
        original_filename: str = "",
        name_param: str = "name",
        file_param: str = "audio",
        owner: str | None = None,
    ) -> VoiceEntry:
        """Validate and store an upload under a new name, owned by `owner` (None: shared).

        Raises:
            InvalidRequestError: bad name, language or audio (400).
            PayloadTooLargeError: the file is over the upload limit (413).
            ConflictError: the name is already a voice name or alias (409).
        """
        name = validate_name(name, name_param)
        lang = self._language(language)
        if len(data) > self.max_upload_bytes:
            raise PayloadTooLargeError(
                f"'{file_param}' is larger than {self.max_upload_bytes} bytes.",
                param=file_param,
                code="file_too_large",
            )
        facts = inspect_audio(data, file_param)
        claims = self._claims()
        if self._live(self._claim(name)) or self._taken(name, claims):
            raise self._conflict(name, name_param)
        voices = sum(1 for c in claims if c.kind == "name")
        if voices >= self.max_voices:
            raise ConflictError(
                f"The library holds {voices} voices, its limit (CHATTERBOX_MAX_VOICES); "
                "delete one first.",
                param=name_param,
                code="voice_limit_reached",
            )
        voice_id = "voice_" + uuid.uuid4().hex
        record = VoiceRecord(
            id=voice_id,
            uploaded_name=name,
            language=lang,
            audio_key=f"voices/{voice_id}/audio{facts.extension}",
            media_type=facts.media_type,
            original_filename=original_filename[:255],
            file_size=len(data),
            created_at=int(time.time()),
            duration_s=facts.duration_s,
            sample_rate=facts.sample_rate,
            channels=facts.channels,
            sha256=hashlib.sha256(data).hexdigest(),
            owner=owner,
        )
        try:
            self.store.put(record.audio_key, data)
            self.store.put(_record_key(voice_id), json.dumps(asdict(record)).encode())
            self._create_claim(name, voice_id, "name", name_param)
        except Exception:
            # Disk full, a lost race for the name, a dropped connection: whatever was
            # written goes, so a failed upload leaves nothing behind. If this cleanup
            # fails too, or the process dies, the sweep removes the folder once it is
            # older than its grace period.
            with contextlib.suppress(OSError):
                self._remove_folder(record)
            raise
        return VoiceEntry(record, name, ())

    def rename(self, key: str, new_name: str) -> VoiceEntry:
        """Give a voice a new name; its aliases and id stay. 404 or 409 on failure."""
        new_name = validate_name(new_name, "new_name")
        entry, old = self._entry_for(key)
        if new_name == entry.name:
            return entry
        if _claim_key(new_name) == old.path:
            return self._respell(entry, old, new_name, key)
        if self._taken(new_name, self._claims(), but=old):
            raise self._conflict(new_name, "new_name")
        new = self._create_claim(new_name, entry.record.id, "name", "new_name")
        if not self.store.take(old.path, old.raw):
            # A concurrent rename or delete won the old name; undo ours.
            self.store.take(new.path, new.raw)
            raise VoiceNotFoundError(f"Voice {key!r} not found.", param="name")
        return VoiceEntry(entry.record, new_name, entry.aliases)

    def _respell(self, entry: VoiceEntry, old: _Claim, new_name: str, key: str) -> VoiceEntry:
        """A rename that only changes case or normalisation: the claim is rewritten in place."""
        new = _Claim.new(new_name, entry.record.id, "name")
        if not self.store.take(old.path, old.raw):
            raise VoiceNotFoundError(f"Voice {key!r} not found.", param="name")
        try:
            self.store.create(new.path, new.raw)
        except FileExistsError:
            # Another upload took the name in the instant it was free: put ours back
            # if we can, and report the conflict.
            with contextlib.suppress(FileExistsError):
                self.store.create(old.path, old.raw)
            raise self._conflict(new_name, "new_name") from None
        return VoiceEntry(entry.record, new_name, entry.aliases)

    def delete(self, key: str) -> VoiceEntry:
        """Delete a voice, its aliases and its audio; 404 if it is not there."""
        entry, name_claim = self._entry_for(key)
        if not self.store.take(name_claim.path, name_claim.raw):
            raise VoiceNotFoundError(f"Voice {key!r} not found.", param="name")
        for c in self._claims():
            if c.voice_id == entry.record.id:
                self.store.take(c.path, c.raw)
        self._remove_folder(entry.record)
        with self._audio_lock:
            self._audio.pop(entry.record.id, None)
        return entry

    def add_alias(self, key: str, alias: str) -> VoiceEntry:
        """Point another name at a voice; 409 if it is any voice's name or alias."""
        alias = validate_name(alias, "alias")
        entry, _ = self._entry_for(key)
        if len(entry.aliases) >= self.max_aliases_per_voice:
            raise ConflictError(
                f"Voice {entry.name!r} has {len(entry.aliases)} aliases, its limit "
                "(CHATTERBOX_MAX_ALIASES_PER_VOICE); remove one first.",
                param="alias",
                code="alias_limit_reached",
            )
        if self._taken(alias, self._claims()):
            raise self._conflict(alias, "alias")
        claim = self._create_claim(alias, entry.record.id, "alias", "alias")
        if self._record(entry.record.id) is None:  # deleted while we added the alias
            self.store.take(claim.path, claim.raw)
            raise VoiceNotFoundError(f"Voice {key!r} not found.", param="name")
        return VoiceEntry(entry.record, entry.name, tuple(sorted((*entry.aliases, alias))))

    def remove_alias(self, key: str, alias: str) -> VoiceEntry:
        """Remove one alias of a voice; 404 if the voice does not have it."""
        entry, _ = self._entry_for(key)
        claim = self._claim(alias)
        if (
            claim is None
            or claim.kind != "alias"
            or claim.voice_id != entry.record.id
            or not self.store.take(claim.path, claim.raw)
        ):
            raise VoiceNotFoundError(f"Voice {key!r} has no alias {alias!r}.", param="alias")
        kept = tuple(a for a in entry.aliases if a != claim.key)
        return VoiceEntry(entry.record, entry.name, kept)

    def set_default(self, key: str) -> VoiceEntry:
        """Make a voice the default for requests that name none."""
        entry = self.get_voice(key)
        self.store.put("default.json", json.dumps({"voice_id": entry.record.id}).encode())
        return entry

    def clear_default(self) -> None:
        """Go back to the model's built-in voice."""
        self.store.delete("default.json")

    # -- housekeeping ------------------------------------------------------------

    def sweep_orphans(self, min_age_s: float = 3600.0) -> list[str]:
        """Remove what crashes left behind; return the ids of the voices removed.

        An upload killed between writing its folder and claiming its name, or a delete
        killed part way, leaves a voice that no name points at: invisible, but taking
        space. Such voices older than `min_age_s` go, with any aliases still pointing at
        them. Younger ones may be uploads another replica is finishing right now, so
        they stay. A folder without its record (a write failed between the audio and
        the record) is dated by its newest file and goes once that is old enough.
        """
        claims = self._claims()
        named = {c.voice_id for c in claims if c.kind == "name"}
        files: dict[str, list[str]] = {}
        for key in self.store.list("voices/"):
            files.setdefault(key.split("/")[1], []).append(key)
        cutoff = time.time() - min_age_s
        removed = []
        for voice_id in sorted(set(files) - named):
            record = self._record(voice_id)
            if record is None:
                if self._newest(files[voice_id]) <= cutoff:
                    for key in files[voice_id]:
                        self.store.delete(key)
                    removed.append(voice_id)
                continue
            if record.created_at > cutoff:
                continue
            for c in claims:
                if c.voice_id == voice_id:
                    self.store.take(c.path, c.raw)
            self._remove_folder(record)
            removed.append(voice_id)
        self.store.remove_stale_temporaries(min_age_s)
        return removed

    # -- helpers ---------------------------------------------------------------

    def _language(self, language: str | None) -> str:
        code = normalize_language(language or DEFAULT_LANGUAGE)
        if code not in self.languages:
            raise InvalidRequestError(
                f"Language {language!r} is not supported; supported: "
                f"{', '.join(sorted(self.languages))}.",
                param="language",
                code="unsupported_language",
            )
        return code

    def _live(self, claim: _Claim | None) -> bool:
        return claim is not None and self._record(claim.voice_id) is not None

    def _taken(self, name: str, claims: list[_Claim], but: _Claim | None = None) -> bool:
        """Whether a live claim other than `but` has the same folded name (older claims
        stored under their exact spelling included)."""
        folded = fold_name(name)
        return any(
            fold_name(c.key) == folded and c.path != (but.path if but else None) and self._live(c)
            for c in claims
        )

    @staticmethod
    def _conflict(name: str, param: str) -> ConflictError:
        return ConflictError(
            f"A voice or alias named {name!r} already exists.", param=param, code="voice_exists"
        )

    def _create_claim(self, key: str, voice_id: str, kind: ClaimKind, param: str) -> _Claim:
        claim = _Claim.new(key, voice_id, kind)
        for _ in range(2):
            try:
                self.store.create(claim.path, claim.raw)
                return claim
            except FileExistsError:
                existing = self._claim(key)
                if existing is not None and self._live(existing):
                    break
                # A claim whose voice is gone (a delete raced an alias addition, or a
                # crash) is debris; take it away once, then retry the create.
                if existing is not None:
                    self.store.take(existing.path, existing.raw)
        raise self._conflict(key, param)

    def _newest(self, keys: list[str]) -> float:
        newest = 0.0
        for key in keys:
            try:
                newest = max(newest, self.store.modified(key))
            except FileNotFoundError:
                continue
        return newest

    def _remove_folder(self, record: VoiceRecord) -> None:
        # The record goes first, so nothing reaches the audio once removal starts.
        self.store.delete(_record_key(record.id))
        for key in self.store.list(f"voices/{record.id}/"):
            self.store.delete(key)


def build_voice_library(settings: Settings) -> VoiceLibrary:
    """The library the settings describe: its store, upload limit and languages."""
    return VoiceLibrary(
        build_voice_store(settings.voices),
        max_upload_bytes=settings.server.max_upload_bytes,
        languages=languages_of(settings.families),
        max_voices=settings.voices.max_voices,
        max_aliases_per_voice=settings.voices.max_aliases_per_voice,
    )
