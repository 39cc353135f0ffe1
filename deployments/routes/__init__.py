"""HTTP routes, one module-level `APIRouter` per concern: speech, voices, ops, web.

Routes get their collaborators from `app.state.api` (an `ApiState`, set once by
`deployments.ingress.build_api`) through the `State` dependency, never from
closures or module globals, so each endpoint is a plain module-level function a
reader (or a tool) can find by name, and tests run the same routes over a local
backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from chatterbox_serve.config import Settings
from chatterbox_serve.jobs import JobsAccess
from chatterbox_serve.speech import SpeechBackend
from chatterbox_serve.voices import VoiceLookup
from deployments.cluster_status import StatusSource
from deployments.streams import StreamSlots


@dataclass(frozen=True)
class ApiState:
    """What the routes work with: settings, backend, voices, cluster status, jobs, stream caps."""

    settings: Settings
    backend: SpeechBackend
    engine_name: str
    voices: VoiceLookup
    status: StatusSource | None = None
    jobs: JobsAccess | None = None
    streams: StreamSlots = field(default_factory=lambda: StreamSlots({}))


def api_state(request: Request) -> ApiState:
    """The `ApiState` that `build_api` put on the app."""
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(api_state)]
