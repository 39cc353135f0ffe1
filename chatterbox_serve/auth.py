"""API keys: where they come from and how a presented key is checked.

The HTTP side (which paths are public, reading the `Authorization` header) is in
`deployments/auth.py`.

`API_KEYS` holds either the keys themselves, comma-separated, or the path of a file
with one key per line (commas also allowed), which is how a Kubernetes Secret is
mounted. The file is read when the ingress replica starts, so a rotated Secret takes
effect at the next replica start.

The check compares the SHA-256 of the presented key with that of every configured
key using `hmac.compare_digest`, and never stops early, so the time taken says
nothing about which key, how much of a key, or how long a key matched
(`compare_digest` is constant-time only between inputs of equal length).

`API_KEYS` unset means the API is open; set but empty (an empty Kubernetes Secret)
stops startup.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from chatterbox_serve.config import ConfigError, Settings


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys; empty means the API is open to anyone."""

    keys: tuple[bytes, ...] = field(default=(), repr=False)
    digests: tuple[bytes, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digests", tuple(_digest(k) for k in self.keys))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def accepts(self, presented: str | None) -> bool:
        """Whether `presented` equals one of the keys, in time independent of the keys."""
        if not self.keys or not presented:
            return False
        # Headers are decoded as latin-1, so this gives back the bytes the client sent.
        try:
            candidate = presented.encode("latin-1")
        except UnicodeEncodeError:
            return False
        presented_digest = _digest(candidate)
        matches = [hmac.compare_digest(presented_digest, key) for key in self.digests]
        return any(matches)

    def __len__(self) -> int:
        return len(self.keys)


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def parse_keys(text: str) -> tuple[bytes, ...]:
    """Keys from comma- or newline-separated text; blanks and `#` comment lines dropped."""
    keys: list[bytes] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        keys.extend(k.strip().encode() for k in line.split(",") if k.strip())
    return tuple(dict.fromkeys(keys))


def load_api_keys(settings: Settings) -> ApiKeys:
    """The tenants' keys, from `API_KEYS` (see `load_keys`)."""
    return load_keys(settings.server.api_keys, "API_KEYS")


def load_admin_keys(settings: Settings) -> ApiKeys:
    """The operators' keys, from `ADMIN_API_KEYS` (see `load_keys`)."""
    return load_keys(settings.server.admin_api_keys, "ADMIN_API_KEYS")


def load_keys(secret: SecretStr | None, name: str) -> ApiKeys:
    """Read a key setting as a key list or, when it names a file, from that file.

    Raises:
        ConfigError: the setting is set but empty, looks like a path but no such file
            exists, or holds no key. Failing closed: an empty or missing Secret must
            not leave the API open or turn the path itself into a key.
    """
    if secret is None:
        return ApiKeys()
    value = secret.get_secret_value().strip()
    if not value:
        raise ConfigError(
            f"{name} is set but empty (an empty Kubernetes Secret?). Put one or more keys "
            "in it, or unset it."
        )
    path = Path(value).expanduser()
    if path.is_file():
        keys = parse_keys(path.read_text(encoding="utf-8"))
        if not keys:
            raise ConfigError(f"{name} file {str(path)!r} holds no key")
        return _checked(keys, name)
    if value.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"{name} names a file that does not exist: {value!r}")
    keys = parse_keys(value)
    if not keys:
        # "," or "#x" is a mistake, not a wish for an open API: fail closed.
        raise ConfigError(f"{name} is set but holds no key (only commas, blanks or comments)")
    return _checked(keys, name)


def _checked(keys: tuple[bytes, ...], name: str) -> ApiKeys:
    """Refuse keys a client could not send as a plain header value."""
    for number, key in enumerate(keys, 1):
        if not all(0x21 <= b <= 0x7E for b in key):
            raise ConfigError(
                f"{name} key number {number} holds a non-ASCII or non-printable byte; "
                "keys must be printable ASCII"
            )
    return ApiKeys(keys)
