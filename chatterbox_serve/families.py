"""The model families this service can load, and what differs between them.

A family is a Chatterbox model with its own checkpoint, languages and sampling; one
loaded family is one model deployment with its own engine. The request's `model`
names a family (`model_names`), and what a family does with a request is read from
its `FamilySpec` here and nowhere else:

| family | checkpoint | languages | CFG | S3Gen steps | tags |
| --- | --- | --- | --- | --- | --- |
| `chatterbox` | the English T3 (Llama 520M) | English | yes | 10 | no |
| `chatterbox-multilingual` | the 23-language T3 | 23 | yes | 10 | no |
| `chatterbox-turbo` | GPT-2 medium T3, meanflow S3Gen | English | no | 2 | yes |

A request's `model` resolves to a loaded family (`resolve_model`): a family's own
name, or one of OpenAI's names for the default family (CHATTERBOX_DEFAULT_MODEL).
`chatterbox` also names the multilingual family when the English one is not loaded:
that model speaks English too, and a client that always sends `chatterbox` (the
field's default, as the original API had it) keeps working on the default
configuration. Anything else is a 404 (`ModelNotFoundError`) before any work.

An engine serves exactly one family: `Settings.family` (the builder hands each model
deployment `Settings.for_family(family)`), so engines keep their `cls(settings)`
construction. Generation defaults per family live in `generation.py`
(`family_defaults`), beside the parameters they default.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

from chatterbox_serve.errors import ModelNotFoundError

__all__ = [
    "OPENAI_MODEL_NAMES",
    "PARALINGUISTIC_TAGS",
    "FamilySpec",
    "ModelFamily",
    "model_families",
    "model_names",
    "resolve_model",
    "spec_of",
]


class ModelFamily(enum.StrEnum):
    """A model family by the name a request's `model` gives it."""

    ORIGINAL = "chatterbox"
    MULTILINGUAL = "chatterbox-multilingual"
    TURBO = "chatterbox-turbo"

    @property
    def spec(self) -> FamilySpec:
        return spec_of(self)


# OpenAI's speech model names: a request naming one gets the default family
# (CHATTERBOX_DEFAULT_MODEL).
OPENAI_MODEL_NAMES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")

# Turbo's paralinguistic tags, as its tokenizer's added tokens spell them (upstream
# chatterbox-tts 0.1.7, the Turbo checkpoint's added_tokens.json).
PARALINGUISTIC_TAGS = (
    "[laugh]",
    "[sigh]",
    "[cough]",
    "[chuckle]",
    "[gasp]",
    "[groan]",
    "[sniff]",
    "[shush]",
    "[clear throat]",
)


@dataclass(frozen=True)
class FamilySpec:
    """The facts of one family that serving depends on."""

    family: ModelFamily
    description: str
    # Whether every language of the multilingual model is accepted; else English only.
    multilingual: bool
    # Classifier-free guidance: False means `cfg_weight` is ignored.
    cfg: bool
    # S3Gen's flow steps as upstream decodes this family.
    diffusion_steps: int
    # The paralinguistic tags the text tokenizer knows (empty: spoken as text).
    tags: tuple[str, ...]
    # Most speech tokens T3 makes for one chunk whatever the operator allows (None: only
    # the operator's CHATTERBOX_MAX_NEW_TOKENS and the model's position table bound it).
    max_new_tokens: int | None
    # Least seconds of reference audio for a cloned voice (exclusive: more than this).
    min_voice_s: float
    # Generation parameters a request may send that this family does not use.
    ignored_fields: tuple[str, ...]


_ORIGINAL = FamilySpec(
    family=ModelFamily.ORIGINAL,
    description="Chatterbox (English): Llama T3 with CFG, 10-step S3Gen",
    multilingual=False,
    cfg=True,
    diffusion_steps=10,
    tags=(),
    max_new_tokens=None,
    min_voice_s=0.0,
    ignored_fields=("top_k",),
)
_SPECS: dict[ModelFamily, FamilySpec] = {
    ModelFamily.ORIGINAL: _ORIGINAL,
    ModelFamily.MULTILINGUAL: replace(
        _ORIGINAL,
        family=ModelFamily.MULTILINGUAL,
        description="Chatterbox Multilingual (23 languages): Llama T3 with CFG, 10-step S3Gen",
        multilingual=True,
    ),
    ModelFamily.TURBO: FamilySpec(
        family=ModelFamily.TURBO,
        description="Chatterbox Turbo (English): GPT-2 T3 without CFG, 2-step meanflow S3Gen",
        multilingual=False,
        cfg=False,
        diffusion_steps=2,
        tags=PARALINGUISTIC_TAGS,
        # Upstream samples one token after the prompt, then up to 1000 more.
        max_new_tokens=1001,
        min_voice_s=5.0,
        ignored_fields=("cfg_weight", "exaggeration", "min_p"),
    ),
}


def spec_of(family: ModelFamily) -> FamilySpec:
    """The facts of `family`."""
    return _SPECS[family]


def model_names(loaded: Sequence[ModelFamily]) -> list[str]:
    """What `/v1/models` lists: the loaded families, then OpenAI's names."""
    return [*(f.value for f in loaded), *OPENAI_MODEL_NAMES]


def model_families(
    loaded: Sequence[ModelFamily], default: ModelFamily
) -> list[tuple[str, ModelFamily]]:
    """Every listed model name with the family a request naming it gets."""
    return [(name, resolve_model(name, loaded, default)) for name in model_names(loaded)]


def resolve_model(
    name: str | None, loaded: Sequence[ModelFamily], default: ModelFamily
) -> ModelFamily:
    """The loaded family a request's `model` names; None (no model given) is the default.

    Raises:
        ModelNotFoundError: an unknown name, or a family this service does not load.
    """
    if name is None or name in OPENAI_MODEL_NAMES:
        return default
    family = next((f for f in ModelFamily if f.value == name), None)
    if family is not None and family in loaded:
        return family
    if family is ModelFamily.ORIGINAL and ModelFamily.MULTILINGUAL in loaded:
        return ModelFamily.MULTILINGUAL
    raise ModelNotFoundError(
        f"The model {name[:64]!r} is not served here; models: {', '.join(model_names(loaded))}.",
        param="model",
    )
