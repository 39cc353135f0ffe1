"""Languages the Chatterbox models speak."""

from __future__ import annotations

from collections.abc import Iterable

from chatterbox_serve.families import ModelFamily

# The 23 languages of Chatterbox's multilingual model (t3_mtl23ls_v2), by ISO 639-1 code.
SUPPORTED_LANGUAGES: dict[str, str] = {
    "ar": "Arabic",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "ms": "Malay",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "sv": "Swedish",
    "sw": "Swahili",
    "tr": "Turkish",
    "zh": "Chinese",
}

ENGLISH_ONLY: dict[str, str] = {"en": "English"}

DEFAULT_LANGUAGE = "en"


def languages_for(multilingual: bool) -> dict[str, str]:
    """The languages a model variant accepts."""
    return SUPPORTED_LANGUAGES if multilingual else ENGLISH_ONLY


def languages_of(families: Iterable[ModelFamily]) -> dict[str, str]:
    """The languages at least one of `families` speaks."""
    return SUPPORTED_LANGUAGES if any(f.spec.multilingual for f in families) else ENGLISH_ONLY


def normalize_language(code: str) -> str:
    """Lower-case a code and drop a region suffix (`pt-BR` -> `pt`)."""
    return code.strip().lower().replace("_", "-").split("-", 1)[0]
