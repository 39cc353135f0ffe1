"""The speech plan: from a text to its chunks and each chunk's engine request.

Every path plans alike: whole files, streams and long-text jobs (at creation, and at
run time for each chunk) split a text with the same rules into the same chunks, and
give each chunk the same token budget. A job's chunks are the chunks a speech request
of the same text gets. Budgets depend on the model family where its limits differ
(`FamilySpec.max_new_tokens`: Turbo stops at 1001 tokens whatever the operator allows).
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.errors import InvalidRequestError
from chatterbox_serve.families import ModelFamily
from chatterbox_serve.text import speech_rates
from chatterbox_serve.text.chunking import split_text

# Input whose non-space characters are more than this share of combining marks and
# other letterless symbols is refused: it is not speech, and it splits into many
# tiny chunks, each of which the engine may run to its token limit.
MAX_MARK_SHARE = 0.5


def plan_chunks(
    text: str,
    language: str,
    settings: Settings,
    *,
    first_chunk_length: int | None = None,
    max_chunks: int | None = None,
    family: ModelFamily | None = None,
) -> list[str]:
    """The chunk texts of `text`, in order.

    Raises:
        InvalidRequestError: mostly combining marks, nothing speakable, or more than
            `max_chunks` chunks.
    """
    _refuse_mostly_marks(text)
    # Per-script chunk length: CJK text costs more prompt and speech per character.
    length = speech_rates.chunk_length(
        text, language, settings.chunking.max_chunk_length, budget_limits(settings, family)
    )
    first = None if first_chunk_length is None else min(first_chunk_length, length)
    chunks = _merge_letterless(split_text(text, length, first))
    if not chunks:
        raise InvalidRequestError("Input has no speakable text.", param="input")
    if max_chunks is not None and len(chunks) > max_chunks:
        raise InvalidRequestError(
            f"Input splits into {len(chunks)} chunks; the limit is "
            f"{max_chunks} (CHATTERBOX_MAX_CHUNKS_PER_REQUEST).",
            param="input",
        )
    return chunks


def chunk_request(
    template: SynthesisRequest, index: int, text: str, settings: Settings
) -> SynthesisRequest:
    """The engine request of chunk `index`: the template's settings, the chunk's budget."""
    budget = token_budget(
        text, template.language, settings, template.max_new_tokens, template.family
    )
    return replace(template, text=text, chunk_index=index, max_new_tokens=budget)


def audio_cap_s(text: str, language: str, settings: Settings) -> float:
    """Most seconds of audio (before speed) that `text` may become."""
    return speech_rates.audio_cap_s(text, language, settings.chunking.max_audio_s_per_char)


def token_budget(
    chunk: str,
    language: str,
    settings: Settings,
    asked: int | None = None,
    family: ModelFamily | None = None,
) -> int:
    """Most speech tokens the engine may make for `chunk`: its audio cap, or less if asked.

    The engine stops the chunk where the audio cap would cut it, within what the engine
    allows (`text/speech_rates.py`), so a model that never says stop costs seconds, not
    the minutes of its own token limit.
    """
    budget = speech_rates.speech_budget(chunk, language, budget_limits(settings, family))
    return budget if asked is None else min(asked, budget)


def budget_limits(
    settings: Settings, family: ModelFamily | None = None
) -> speech_rates.BudgetLimits:
    """What bounds a chunk's speech: the operator's audio cap and the engine's limits,
    and the family's own token cap (None: the default family's)."""
    e = settings.engine
    spec = (family or e.default_family).spec
    tokens = e.max_new_tokens
    if spec.max_new_tokens is not None:
        tokens = min(tokens, spec.max_new_tokens)
    return speech_rates.BudgetLimits(
        settings.chunking.max_audio_s_per_char, tokens, e.max_model_len, _prompt_rows(spec.family)
    )


def _prompt_rows(family: ModelFamily) -> int:
    """T3's prompt rows besides the text: Turbo's are its speaker row, its 375 prompt
    speech tokens and the start token; the original's its conditioning and two starts."""
    if family is ModelFamily.TURBO:
        from chatterbox_serve.model.turbo.config import TurboConfig

        return TurboConfig().speech_cond_prompt_len + 2
    return speech_rates.PROMPT_ROWS


def _speakable(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


def _refuse_mostly_marks(text: str) -> None:
    visible = [ch for ch in text if not ch.isspace()]
    marks = sum(1 for ch in visible if unicodedata.category(ch)[0] == "M")
    if visible and marks > MAX_MARK_SHARE * len(visible):
        raise InvalidRequestError(
            f"Input is mostly combining marks ({marks} of {len(visible)} characters); "
            "it has too little speakable text.",
            param="input",
            code="invalid_input",
        )


def _merge_letterless(chunks: list[str]) -> list[str]:
    """Join chunks without a letter or digit onto a neighbour: alone they say nothing."""
    merged: list[str] = []
    carry = ""
    for chunk in chunks:
        if not any(_speakable(ch) for ch in chunk):
            if merged:
                merged[-1] = f"{merged[-1]} {chunk}"
            else:
                carry = f"{carry} {chunk}".strip()
            continue
        merged.append(f"{carry} {chunk}".strip() if carry else chunk)
        carry = ""
    if carry and not merged:
        return []
    return merged
