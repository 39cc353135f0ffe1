"""`load_settings`: app-arg overrides, a `.env` file and the environment into `Settings`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from chatterbox_serve.config.engine import engine_names
from chatterbox_serve.config.settings import _SECRETS, Settings, _fields, env_aliases, env_names
from chatterbox_serve.errors import ConfigError
from chatterbox_serve.families import ModelFamily

logger = logging.getLogger(__name__)

_BLANK_IS_A_VALUE = frozenset({"CORS_ORIGINS", "API_KEYS", "ADMIN_API_KEYS"})


def _canonical(source: Mapping[str, Any]) -> dict[str, Any]:
    """`source` with aliases renamed to their setting's variable, which wins if both are set."""
    aliases = env_aliases()
    out = {aliases[k]: v for k, v in source.items() if k in aliases}
    out.update({k: v for k, v in source.items() if k not in aliases})
    return out


def _allowed(section: str, field: str) -> str:
    section_cls = Settings.model_fields[section].default_factory
    assert isinstance(section_cls, type) and issubclass(section_cls, BaseModel)
    info = section_cls.model_fields[field]
    bounds = []
    for meta in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sym} {getattr(meta, attr)}")
    if bounds:
        return "allowed: " + " and ".join(bounds)
    if info.annotation is bool:
        return "allowed: true or false"
    if (section, field) == ("engine", "engine"):
        return "allowed: " + ", ".join(engine_names())
    if (section, field) in (("engine", "models"), ("engine", "default_model")):
        return "allowed: " + ", ".join(ModelFamily)
    return f"allowed: {info.annotation}".replace("typing.", "")


def _read_dotenv(path: str | os.PathLike[str] | None) -> dict[str, str]:
    if path is None or not Path(path).is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = ".env",
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build `Settings` from app-arg overrides, a `.env` file and the environment.

    Raises:
        ConfigError: an unknown override key, or a value out of range; the message
            names the variable and what it allows.
    """
    environ = os.environ if environ is None else environ
    known = set(env_names()) | set(env_aliases())
    for key in overrides or {}:
        if key not in known:
            raise ConfigError(f"Unknown setting {key!r} in app args; known: {sorted(known)}")
    for key in environ:
        if key.startswith("CHATTERBOX_") and key not in known:
            logger.warning("Ignoring unknown environment variable %s", key)

    merged: dict[str, Any] = _canonical(overrides or {})
    merged.update(_canonical(_read_dotenv(dotenv_path)))
    merged.update(_canonical({k: v for k, v in environ.items() if k in known}))

    sections: dict[str, dict[str, Any]] = {}
    for env, section, field in _fields():
        if env in merged:
            value = merged[env]
            # Blank means unset, except where blank is a value: an empty API_KEYS (an
            # empty Kubernetes Secret) must stop startup, not open the API.
            if isinstance(value, str) and value.strip() == "" and env not in _BLANK_IS_A_VALUE:
                continue
            sections.setdefault(section, {})[field] = value
    try:
        return Settings.model_validate(sections)
    except ValidationError as exc:
        first = exc.errors()[0]
        if len(first["loc"]) < 2:  # a check across a section's fields
            raise ConfigError(f"Invalid settings: {first['msg']}") from None
        section, field = str(first["loc"][0]), str(first["loc"][1])
        env = next(e for e, s, f in _fields() if (s, f) == (section, field))
        shown = "<redacted>" if env in _SECRETS else repr(merged[env])
        raise ConfigError(
            f"Invalid {env}={shown}: {first['msg']} ({_allowed(section, field)})"
        ) from None
