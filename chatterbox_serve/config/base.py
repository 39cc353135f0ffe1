"""What every settings section shares: forbidden extras, frozen values, one variable each."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


def _env(name: str, *aliases: str) -> dict[str, Any]:
    """The variable of a setting, and older names that still set it (the name wins)."""
    return {"env": name, "aliases": list(aliases)}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
