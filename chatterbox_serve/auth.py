"""API keys: where they come from and how a presented key is checked.

The HTTP side (which paths are public, reading the `Authorization` header) is in
`deployments/auth.py`.

`API_KEYS` holds either the keys themselves, comma-separated, or the path of a file
with one key per line (commas also allowed), which is how a Kubernetes Secret is
mounted. The file is read when the ingress replica starts, so a rotated Secret takes
effect at the next replica start.

The check compares the presented key with every configured key using
`hmac.compare_digest`, and never stops early, so the time taken says nothing about
which key, or how much of a key, matched.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from chatterbox_serve.config import ConfigError, Settings


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys; empty means the API is open to anyone."""

    keys: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def accepts(self, presented: str | None) -> bool:
        """Whether `presented` equals one of the keys, in time independent of the keys."""
        if not self.keys or not presented:
            return False
        candidate = presented.encode("utf-8", "surrogateescape")
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return any(matches)

    def __len__(self) -> int:
        return len(self.keys)


def parse_keys(text: str) -> tuple[bytes, ...]:
    """Keys from comma- or newline-separated text; blanks and `#` comment lines dropped."""
    keys: list[bytes] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        keys.extend(k.strip().encode() for k in line.split(",") if k.strip())
    return tuple(dict.fromkeys(keys))


def load_api_keys(settings: Settings) -> ApiKeys:
    """Read `API_KEYS` as a key list or, when it names a file, from that file.

    Raises:
        ConfigError: `API_KEYS` looks like a path but no such file exists, or the file
            holds no key. Failing closed: a missing Secret mount must not leave the
            API open or turn the path itself into a key.
    """
    secret = settings.server.api_keys
    if secret is None:
        return ApiKeys()
    value = secret.get_secret_value().strip()
    if not value:
        return ApiKeys()
    path = Path(value).expanduser()
    if path.is_file():
        keys = parse_keys(path.read_text(encoding="utf-8"))
        if not keys:
            raise ConfigError(f"API_KEYS file {str(path)!r} holds no key")
        return ApiKeys(keys)
    if value.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"API_KEYS names a file that does not exist: {value!r}")
    return ApiKeys(parse_keys(value))
