"""Generation parameters: every sampling setting declared once, with its bounds and default.

`GenerationParameters` is the one declaration. Its fields carry their bounds (the
`Annotated` types below) and their defaults; everything else derives from it:

- the request bodies (`SpeechRequest`, the long-text job request, a job retry's
  `new_parameters`) take `GenerationOptions`, each field optional, same bounds;
- the server's defaults (`Settings.generation`, one environment variable each) are
  validated with the same bounds and default to the values here;
- the stored job record and the engine's `SynthesisRequest` carry the dataclass whole.

Adding a parameter: a field here and in `GenerationOptions` (a test checks the two
agree), the engine that reads it, and its README row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Annotated, Any

from pydantic import BaseModel, Field

Exaggeration = Annotated[float, Field(ge=0.25, le=2.0)]
CfgWeight = Annotated[float, Field(ge=0.0, le=1.0)]
Temperature = Annotated[float, Field(ge=0.05, le=5.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MinP = Annotated[float, Field(ge=0.0, le=1.0)]
RepetitionPenalty = Annotated[float, Field(ge=1.0, le=3.0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# Not a generation parameter (the audio is stretched after the engine), but bounded
# the same wherever a request carries it.
Speed = Annotated[float, Field(ge=0.25, le=4.0)]


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
