"""Speech: the plan from text to engine requests, the pipeline, and what crosses deployments.

- `plan`: text to chunks and token budgets, for speech and long-text jobs alike;
- `pipeline`: `SpeechPipeline`, which synthesises a request's chunks and streams or
  renders the assembled audio;
- `feed`: which chunks are in flight when (all at once, or a window ahead of a stream);
- `transfer`: sending engine requests with a voice's audio only where it is missing;
- `messages`: the values a request crosses deployments as;
- `backend`: what the HTTP layer calls.
"""

from chatterbox_serve.speech.backend import SpeechBackend
from chatterbox_serve.speech.messages import (
    AudioPiece,
    RenderedSpeech,
    SpeechOrder,
    StageTimings,
    Usage,
)
from chatterbox_serve.speech.pipeline import SpeechPipeline
from chatterbox_serve.speech.plan import audio_cap_s, chunk_request, plan_chunks, token_budget
from chatterbox_serve.speech.transfer import Cancellable, Submit, SubmitStream, send_detached

__all__ = [
    "AudioPiece",
    "Cancellable",
    "RenderedSpeech",
    "SpeechBackend",
    "SpeechOrder",
    "SpeechPipeline",
    "StageTimings",
    "Submit",
    "SubmitStream",
    "Usage",
    "audio_cap_s",
    "chunk_request",
    "plan_chunks",
    "send_detached",
    "token_budget",
]
