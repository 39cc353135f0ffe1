"""The generation section: the server's default of each generation parameter."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

from chatterbox_serve.config.base import _env, _Section
from chatterbox_serve.families import ModelFamily
from chatterbox_serve.generation import (
    CfgWeight,
    Exaggeration,
    GenerationParameters,
    MinP,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    family_defaults,
)


class GenerationDefaults(_Section):
    """The server's default of each generation parameter (bounds and values: `generation.py`)."""

    exaggeration: Exaggeration = Field(
        GenerationParameters.exaggeration,
        description="Default emotion exaggeration.",
        json_schema_extra=_env("EXAGGERATION"),
    )
    cfg_weight: CfgWeight = Field(
        GenerationParameters.cfg_weight,
        description="Default classifier-free guidance weight of a request without cfg_weight "
        "(0 turns CFG off); `CFG_WEIGHT`, the original API's name, is an alias.",
        json_schema_extra=_env("CHATTERBOX_CFG_SCALE", "CFG_WEIGHT"),
    )
    temperature: Temperature = Field(
        GenerationParameters.temperature,
        description="Default sampling temperature.",
        json_schema_extra=_env("TEMPERATURE"),
    )
    top_p: TopP = Field(
        GenerationParameters.top_p,
        description="Default nucleus sampling top_p.",
        json_schema_extra=_env("CHATTERBOX_TOP_P"),
    )
    min_p: MinP = Field(
        GenerationParameters.min_p,
        description="Default min_p (upstream Chatterbox value).",
        json_schema_extra=_env("CHATTERBOX_MIN_P"),
    )
    repetition_penalty: RepetitionPenalty = Field(
        GenerationParameters.repetition_penalty,
        description="Default repetition penalty (upstream Chatterbox).",
        json_schema_extra=_env("CHATTERBOX_REPETITION_PENALTY"),
    )

    top_k: TopK = Field(
        GenerationParameters.top_k,
        description="Default top_k (Turbo; the original models ignore it).",
        json_schema_extra=_env("CHATTERBOX_TOP_K"),
    )

    def parameters(self, family: ModelFamily | None = None) -> GenerationParameters:
        """These defaults as the engine's parameters (a seed is never a server default).

        For a `family`: upstream's defaults for it, with the values an operator set
        (these variables) over them, so a setting applies to every family that uses it.
        """
        if family is None:
            return GenerationParameters(**self.model_dump())
        return replace(family_defaults(family), **self.model_dump(include=self.model_fields_set))
