"""Settings for chatterbox-serve, read from the environment, a `.env` file and app args.

Every setting has one environment variable. The names are the ones users of the
original Chatterbox API and its vLLM integration already know (`VLLM_MAX_BATCH_SIZE`,
`EXAGGERATION`, ...); settings new to this project take the `CHATTERBOX_` prefix.

Precedence, highest first: process environment, `.env` file, the `settings:` mapping
of the application args in `serve_config.yaml`, then the defaults declared with each
field. This is the only package that reads environment variables.

One module per section of `Settings` declares its fields, defaults and variables
(`engine.py` also holds the `ENGINES` registry); `base.py` is what every section
shares, `settings.py` the root and its variable names, `loading.py` `load_settings`.
"""

from chatterbox_serve.config.chunking import ChunkingConfig
from chatterbox_serve.config.engine import AUTO, ENGINES, EngineConfig, engine_names
from chatterbox_serve.config.generation import GenerationDefaults
from chatterbox_serve.config.loading import load_settings
from chatterbox_serve.config.settings import Settings, env_aliases, env_names
from chatterbox_serve.config.simulated import SimulatedEngineConfig
from chatterbox_serve.config.voices import VoiceConfig
from chatterbox_serve.errors import ConfigError

__all__ = [
    "AUTO",
    "ENGINES",
    "ChunkingConfig",
    "ConfigError",
    "EngineConfig",
    "GenerationDefaults",
    "Settings",
    "SimulatedEngineConfig",
    "VoiceConfig",
    "engine_names",
    "env_aliases",
    "env_names",
    "load_settings",
]
