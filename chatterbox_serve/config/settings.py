"""The root `Settings`, and which environment variable sets each of its fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field

from chatterbox_serve.config.audio import AudioConfig
from chatterbox_serve.config.base import _Section
from chatterbox_serve.config.chunking import ChunkingConfig
from chatterbox_serve.config.engine import EngineConfig
from chatterbox_serve.config.generation import GenerationDefaults
from chatterbox_serve.config.jobs import JobsConfig
from chatterbox_serve.config.server import ServerConfig
from chatterbox_serve.config.simulated import SimulatedEngineConfig
from chatterbox_serve.config.tenancy import TenancyConfig
from chatterbox_serve.config.voices import VoiceConfig
from chatterbox_serve.errors import ConfigError
from chatterbox_serve.families import ModelFamily


class Settings(_Section):
    """The root of all settings; one instance is built at startup and passed to every replica."""

    engine: EngineConfig = Field(default_factory=EngineConfig)
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    voices: VoiceConfig = Field(default_factory=VoiceConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    tenancy: TenancyConfig = Field(default_factory=TenancyConfig)
    simulated: SimulatedEngineConfig = Field(default_factory=SimulatedEngineConfig)

    @property
    def families(self) -> tuple[ModelFamily, ...]:
        """The model families this service loads (CHATTERBOX_MODELS)."""
        return self.engine.families

    @property
    def family(self) -> ModelFamily:
        """The one family an engine built from these settings serves.

        Raises:
            ConfigError: several families are loaded; build the engine from
                `for_family(family)`, as the builder does for each model deployment.
        """
        families = self.engine.families
        if len(families) != 1:
            raise ConfigError(
                f"settings load {len(families)} families; an engine takes for_family(...)"
            )
        return families[0]

    def for_family(self, family: ModelFamily) -> Settings:
        """These settings as the engine of `family` reads them: that family alone loaded.

        USE_MULTILINGUAL_MODEL follows the family, so engine code that reads it picks the
        family's checkpoint.
        """
        engine = self.engine.model_copy(
            update={
                "models": (family,),
                "default_model": None,
                "use_multilingual_model": family is ModelFamily.MULTILINGUAL,
            }
        )
        return self.model_copy(update={"engine": engine})

    def env_view(self) -> dict[str, Any]:
        """Effective settings keyed by environment variable name, for `/config`.

        Secrets show only whether they are set, never their value.
        """
        view: dict[str, Any] = {}
        for env, section, field in _fields():
            value = getattr(getattr(self, section), field)
            view[env] = ("<redacted>" if value is not None else None) if env in _SECRETS else value
        return view


# Settings whose values never leave the process: not in /config, not in logs.
_SECRETS = frozenset({"API_KEYS", "ADMIN_API_KEYS"})


def _env_extras() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for section_name, section_field in Settings.model_fields.items():
        section_cls = section_field.default_factory
        assert isinstance(section_cls, type) and issubclass(section_cls, _Section)
        for name, info in section_cls.model_fields.items():
            extra = info.json_schema_extra
            assert isinstance(extra, dict)
            yield section_name, name, extra


def _fields() -> Iterator[tuple[str, str, str]]:
    for section_name, name, extra in _env_extras():
        yield str(extra["env"]), section_name, name


def env_names() -> list[str]:
    """Every environment variable this package reads, by its name (aliases aside)."""
    return [env for env, _, _ in _fields()]


def env_aliases() -> dict[str, str]:
    """Older variable names that still set a setting -> the setting's variable."""
    return {
        str(alias): str(extra["env"])
        for _, _, extra in _env_extras()
        for alias in extra.get("aliases") or []
    }
