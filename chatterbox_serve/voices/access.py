"""One caller's view of the shared voice library: what it may see and change.

A voice belongs to the key that uploaded it (`VoiceRecord.owner`); voices an operator
uploaded, uploads in open mode and voices stored before owners existed are shared
(owner None). A tenant sees shared voices and its own, and changes only its own;
another tenant's voice is 404, exactly like an unknown one. Operators see and change
everything, and alone choose the library's default voice. Names stay one namespace
for the whole library, so a name another tenant holds is a 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatterbox_serve.errors import PermissionDeniedError, VoiceNotFoundError
from chatterbox_serve.voices.library import VoiceEntry, VoiceLibrary
from chatterbox_serve.voices.resolve import ResolvedVoice


@dataclass(frozen=True)
class Caller:
    """Who is asking: an owner id (None in open mode) and whether an operator."""

    owner: str | None
    operator: bool


class CallerVoices:
    """The library's operations, limited to what `caller` may see and change.

    It is also a `VoiceLookup`, so speech requests resolve only visible voices.
    """

    def __init__(self, library: VoiceLibrary, caller: Caller) -> None:
        self.library = library
        self.caller = caller

    @property
    def max_upload_bytes(self) -> int:
        return self.library.max_upload_bytes

    def _sees(self, owner: str | None) -> bool:
        return self.caller.operator or owner is None or owner == self.caller.owner

    def _changes(self, entry: VoiceEntry) -> None:
        if self.caller.operator:
            return
        if entry.record.owner is None or entry.record.owner != self.caller.owner:
            raise PermissionDeniedError(
                f"Voice {entry.name!r} is shared: only an operator key (ADMIN_API_KEYS) may "
                "change it."
            )

    # -- reading -------------------------------------------------------------------

    def list_voices(self) -> list[VoiceEntry]:
        return [e for e in self.library.list_voices() if self._sees(e.record.owner)]

    def all_names(self) -> list[str]:
        return sorted(n for e in self.list_voices() for n in (e.name, *e.aliases))

    def get_voice(self, key: str) -> VoiceEntry:
        entry = self.library.get_voice(key)
        if not self._sees(entry.record.owner):
            raise VoiceNotFoundError(f"Voice {key!r} not found.", param="name")
        return entry

    def audio(self, key: str) -> tuple[VoiceEntry, bytes]:
        self.get_voice(key)
        return self.library.audio(key)

    def default_entry(self) -> VoiceEntry | None:
        entry = self.library.default_entry()
        return entry if entry is not None and self._sees(entry.record.owner) else None

    def find(self, key: str, *, by_id: bool = False) -> ResolvedVoice | None:
        found = self.library.find(key, by_id=by_id)
        return found if found is not None and self._sees(found.owner) else None

    def default(self) -> ResolvedVoice | None:
        found = self.library.default()
        return found if found is not None and self._sees(found.owner) else None

    # -- writing -------------------------------------------------------------------

    def add_voice(self, name: str, data: bytes, **kw: Any) -> VoiceEntry:
        """Store an upload: the caller's own, or shared when an operator (or open mode) uploads."""
        owner = None if self.caller.operator else self.caller.owner
        return self.library.add_voice(name, data, owner=owner, **kw)

    def rename(self, key: str, new_name: str) -> VoiceEntry:
        self._changes(self.get_voice(key))
        return self.library.rename(key, new_name)

    def delete(self, key: str) -> VoiceEntry:
        self._changes(self.get_voice(key))
        return self.library.delete(key)

    def add_alias(self, key: str, alias: str) -> VoiceEntry:
        self._changes(self.get_voice(key))
        return self.library.add_alias(key, alias)

    def remove_alias(self, key: str, alias: str) -> VoiceEntry:
        self._changes(self.get_voice(key))
        return self.library.remove_alias(key, alias)

    def set_default(self, key: str) -> VoiceEntry:
        self._operator_only()
        return self.library.set_default(key)

    def clear_default(self) -> None:
        self._operator_only()
        self.library.clear_default()

    def sweep_orphans(self) -> list[str]:
        self._operator_only()
        return self.library.sweep_orphans()

    def _operator_only(self) -> None:
        if not self.caller.operator:
            raise PermissionDeniedError(
                "Only an operator key may do this. Operator keys are set in ADMIN_API_KEYS."
            )
