"""Generation parameters: every sampling setting declared once, with its bounds and default.

`GenerationParameters` is the one declaration. Its fields carry their bounds (the
`Annotated` types below) and their defaults; everything else derives from it:

- the request bodies (`SpeechRequest`, the long-text job request, a job retry's
  `new_parameters`) take `GenerationOptions`, each field optional, same bounds;
- the server's defaults (`Settings.generation`, one environment variable each) are
  validated with the same bounds and default to the values here;
- the stored job record and the engine's `SynthesisRequest` carry the dataclass whole.

Each model family has its own defaults (`family_defaults`: upstream's values for
that model) and may ignore some parameters (`FamilySpec.ignored_fields`): those a
request sets anyway are reported back (`ignored_given`), never silently dropped.

Adding a parameter: a field here and in `GenerationOptions` (a test checks the two
agree), the engine that reads it, and its README row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from chatterbox_serve.families import ModelFamily, spec_of


def _not_a_boolean(value: Any) -> Any:
    # Pydantic's lax mode reads JSON `true` as 1; a number field must get a number.
    # (Not strict mode: form fields arrive as text, "0.5", and must still parse.)
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not a boolean")
    return value


_Number = BeforeValidator(_not_a_boolean)

Exaggeration = Annotated[float, _Number, Field(ge=0.25, le=2.0)]
CfgWeight = Annotated[float, _Number, Field(ge=0.0, le=1.0)]
Temperature = Annotated[float, _Number, Field(ge=0.05, le=5.0)]
TopP = Annotated[float, _Number, Field(gt=0.0, le=1.0)]
MinP = Annotated[float, _Number, Field(ge=0.0, le=1.0)]
# Turbo's speech vocabulary has 6563 entries; the original models do not filter by rank.
TopK = Annotated[int, _Number, Field(ge=1, le=6563)]
RepetitionPenalty = Annotated[float, _Number, Field(ge=1.0, le=3.0)]
Seed = Annotated[int, _Number, Field(ge=0, le=2**32 - 1)]
# Not a generation parameter (the audio is stretched after the engine), but bounded
# the same wherever a request carries it.
Speed = Annotated[float, _Number, Field(ge=0.25, le=4.0)]


@dataclass(frozen=True)
class GenerationParameters:
    """The sampling settings of one item, as the engine reads them."""

    exaggeration: Exaggeration = 0.5
    # Classifier-free guidance weight: logits = cond + w * (cond - uncond); 0 turns CFG off.
    cfg_weight: CfgWeight = 0.5
    temperature: Temperature = 0.8
    top_p: TopP = 1.0
    # Upstream Chatterbox's min_p and repetition penalty.
    min_p: MinP = 0.05
    repetition_penalty: RepetitionPenalty = 1.2
    # None: a fresh random seed per item.
    seed: Seed | None = None
    # Turbo's top_k (upstream ChatterboxTurboTTS.generate); the original models ignore it.
    top_k: TopK = 1000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def pick(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The entries of `data` that name a generation parameter."""
        names = cls.names()
        return {k: v for k, v in data.items() if k in names}


class GenerationOptions(BaseModel):
    """The generation fields of a request body; an omitted field takes the server's default."""

    exaggeration: Exaggeration | None = Field(None, description="Emotion exaggeration.")
    cfg_weight: CfgWeight | None = Field(
        None, description="Classifier-free guidance weight; 0 turns CFG off."
    )
    temperature: Temperature | None = Field(None, description="Sampling temperature.")
    top_p: TopP | None = Field(None, description="Nucleus sampling top_p.")
    min_p: MinP | None = Field(None, description="min_p sampling.")
    repetition_penalty: RepetitionPenalty | None = Field(None, description="Repetition penalty.")
    seed: Seed | None = Field(None, description="Seed; omitted means random.")
    top_k: TopK | None = Field(None, description="top_k sampling (Turbo only).")

    def given(self) -> dict[str, Any]:
        """The generation parameters this body sets."""
        return {
            name: value
            for name in GenerationParameters.names()
            if (value := getattr(self, name)) is not None
        }

    def resolve(self, defaults: GenerationParameters) -> GenerationParameters:
        """`defaults` with what this body sets."""
        return replace(defaults, **self.given())


# Upstream's defaults where a family's differ from `GenerationParameters()` (the
# original models' `ChatterboxTTS.generate`). Turbo (`ChatterboxTurboTTS.generate`)
# runs without CFG and without min_p, so those are 0 here, as the engine applies them.
_FAMILY_DEFAULTS: dict[ModelFamily, GenerationParameters] = {
    ModelFamily.TURBO: GenerationParameters(
        cfg_weight=0.0,
        temperature=0.8,
        top_k=1000,
        top_p=0.95,
        min_p=0.0,
        repetition_penalty=1.2,
    ),
}


def family_defaults(family: ModelFamily) -> GenerationParameters:
    """Upstream's generation defaults for `family`."""
    return _FAMILY_DEFAULTS.get(family, GenerationParameters())


def ignored_given(given: dict[str, Any], family: ModelFamily) -> tuple[str, ...]:
    """The parameters in `given` (a request's `given()`) that `family` does not use."""
    return tuple(name for name in spec_of(family).ignored_fields if name in given)
