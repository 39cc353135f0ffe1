"""The caller's view of the voice library, from what the API-key middleware decided."""

from __future__ import annotations

from fastapi import Request

from chatterbox_serve.voices import VoiceLookup
from chatterbox_serve.voices.access import Caller, CallerVoices
from chatterbox_serve.voices.library import VoiceLibrary
from deployments.auth import is_operator, request_owner
from deployments.routes import ApiState


def caller_of(request: Request) -> Caller:
    return Caller(request_owner(request), is_operator(request))


def caller_voices(request: Request, state: ApiState) -> VoiceLookup:
    """The voices this caller may use: shared ones and its own (all, for an operator)."""
    if isinstance(state.voices, VoiceLibrary):
        return CallerVoices(state.voices, caller_of(request))
    return state.voices
