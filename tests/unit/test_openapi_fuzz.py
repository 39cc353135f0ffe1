"""Schema-driven fuzzing (schemathesis) of every documented endpoint, in-process.

Whatever the generated request, positive or negative: no 5xx, and every error is
OpenAI's envelope. Runs the real FastAPI app over a `LocalBackend` with a zero-cost
simulated engine, so it needs no Ray.
"""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    status_code_conformance,
)

from chatterbox_serve.config import load_settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from deployments.ingress import build_api
from tests.local_backend import LocalBackend

_SETTINGS = load_settings(
    {
        "CHATTERBOX_SIM_BASE_S": "0",
        "CHATTERBOX_SIM_PER_ITEM_S": "0",
        "CHATTERBOX_SIM_PER_CHAR_S": "0",
    },
    None,
)
APP = build_api(
    _SETTINGS, LocalBackend(_SETTINGS, SimulatedEngine(_SETTINGS.simulated)), "simulated"
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))


def _assert_envelope(response: schemathesis.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_endpoint_answers_without_5xx_in_the_envelope(case: schemathesis.Case) -> None:
    # Cases come in both modes: schema-valid, and deliberately broken (wrong types,
    # missing fields, unknown methods and media types).
    response = case.call(timeout=60)  # the first speed change imports librosa: ~8 s
    _assert_envelope(response)
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_headers_conformance],
    )
