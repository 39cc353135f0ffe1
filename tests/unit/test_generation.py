"""The generation-parameter model: one declaration, which every request and record follows."""

from __future__ import annotations

import typing
from dataclasses import fields

import pytest
from pydantic import ValidationError

from chatterbox_serve.config import GenerationDefaults
from chatterbox_serve.generation import GenerationOptions, GenerationParameters
from chatterbox_serve.jobs.protocol import RetryParameters
from chatterbox_serve.jobs.records import JobParameters
from chatterbox_serve.protocol import SpeechRequest

NAMES = [f.name for f in fields(GenerationParameters)]


def _bounds(hint: object) -> list[object]:
    if typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return [m for item in typing.get_args(hint)[1:] for m in getattr(item, "metadata", [item])]


@pytest.mark.parametrize("name", NAMES)
def test_every_edge_takes_every_parameter_with_its_bounds(name: str) -> None:
    declared = typing.get_type_hints(GenerationParameters, include_extras=True)[name]
    for model in (GenerationOptions, SpeechRequest, RetryParameters):
        info = model.model_fields[name]
        assert info.default is None, (model, name)
        assert _bounds(info.annotation) == _bounds(declared), (model, name)


def test_server_defaults_are_the_models_defaults() -> None:
    assert GenerationDefaults().parameters() == GenerationParameters()
    for name, info in GenerationDefaults.model_fields.items():
        assert info.metadata == _bounds(
            typing.get_type_hints(GenerationParameters, include_extras=True)[name]
        )


def test_a_request_overrides_only_what_it_sets() -> None:
    defaults = GenerationParameters(temperature=0.3)
    asked = SpeechRequest(input="x", cfg_weight=0.0, seed=5).resolve(defaults)
    assert asked == GenerationParameters(temperature=0.3, cfg_weight=0.0, seed=5)


@pytest.mark.parametrize(("name", "value"), [("cfg_weight", 1.5), ("top_p", 0.0), ("seed", -1)])
def test_out_of_bounds_values_fail_everywhere(name: str, value: float) -> None:
    for model in (SpeechRequest, RetryParameters):
        with pytest.raises(ValidationError):
            model.model_validate(
                {"input": "x", name: value} if model is SpeechRequest else {name: value}
            )


def test_a_retry_changes_generation_speed_and_voice() -> None:
    before = JobParameters("v", "en", "wav", GenerationParameters(seed=1), voice_by_id=True)
    changes = RetryParameters(cfg_weight=0.1, speed=1.5, voice="w").model_dump(exclude_none=True)
    after = before.with_changes(changes)
    assert after.generation == GenerationParameters(seed=1, cfg_weight=0.1)
    assert (after.speed, after.voice, after.voice_by_id) == (1.5, "w", False)


def test_job_parameters_round_trip_and_read_records_written_flat() -> None:
    p = JobParameters("v", "en", "mp3", GenerationParameters(cfg_weight=0.0, seed=3), 1.25, True)
    assert JobParameters.from_dict(p.to_json_dict()) == p
    flat = {"voice": "v", "language": "en", "response_format": "mp3", "cfg_weight": 0.0}
    assert JobParameters.from_dict({**flat, "seed": 3, "speed": 1.25}).generation == p.generation
    wire = p.to_dict()
    assert wire["cfg_weight"] == 0.0 and "generation" not in wire
