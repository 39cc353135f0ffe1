"""chatterbox-serve: Chatterbox TTS on vLLM behind an OpenAI-compatible speech API.

This package is the Ray-free library: settings, wire schemas, text chunking, audio,
engines and the speech pipeline. The Ray Serve deployments live in `deployments/`.
"""

from chatterbox_serve.audio import AudioFormat, StreamingEncoder, encode_audio
from chatterbox_serve.config import ConfigError, Settings, load_settings
from chatterbox_serve.engines import (
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
    VoicePrompt,
    build_engine,
)
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import (
    ChatterboxError,
    ClientError,
    EngineError,
    EngineOverloadedError,
    InvalidRequestError,
    ServerError,
    VoiceNotFoundError,
)
from chatterbox_serve.protocol import SpeechRequest
from chatterbox_serve.speech import SpeechOrder, SpeechPipeline
from chatterbox_serve.text.chunking import split_text

__version__ = "0.1.0"

__all__ = [
    "AudioFormat",
    "ChatterboxError",
    "ClientError",
    "ConfigError",
    "EngineError",
    "EngineOverloadedError",
    "InvalidRequestError",
    "ServerError",
    "Settings",
    "SimulatedEngine",
    "SpeechOrder",
    "SpeechPipeline",
    "SpeechRequest",
    "StreamingEncoder",
    "SynthesisRequest",
    "SynthesisResult",
    "TTSEngine",
    "VoiceNotFoundError",
    "VoicePrompt",
    "__version__",
    "build_engine",
    "encode_audio",
    "load_settings",
    "split_text",
]
