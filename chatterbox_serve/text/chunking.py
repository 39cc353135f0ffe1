"""Sentence-aware text chunking that never drops, adds or reorders text.

`split_text` cuts normalised text at the strongest boundary available: sentence
ends (abbreviations, initials, decimals and mid-sentence ellipses excepted, CJK
terminators included), then clause punctuation, then spaces, then between
characters. Joining the chunks gives back the normalised text, apart from the
whitespace at each cut. A paralinguistic tag (`[clear throat]`) is never cut: Turbo
reads it as one token.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from chatterbox_serve.families import PARALINGUISTIC_TAGS

# Levels of boundary, strongest first; a cut is made at the strongest level that helps.
SENTENCE, CLAUSE, WORD = 3, 2, 1

_CLOSERS = "\"'”’)]}»」』）】"
_SENTENCE_END = re.compile(
    rf"(?:\.{{3}}|…|[.!?‼⁇⁈⁉])[{re.escape(_CLOSERS)}]*(?=\s)|[。！？][{re.escape(_CLOSERS)}]*"
)
_CLAUSE_END = re.compile(rf"[,;:][{re.escape(_CLOSERS)}]*(?=\s)|\s[—–-]{{1,2}}(?=\s)|[，、；：]")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e no fig mt inc ltd co jan feb mar apr jun jul "
    "aug sep sept oct nov dec u.s u.k approx dept est vol ed".split()
)
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)\.$")
_TAG = re.compile("|".join(re.escape(tag) for tag in PARALINGUISTIC_TAGS))


def normalize_text(text: str) -> str:
    """Collapse whitespace: runs holding a newline become one newline, others one space."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[^\S\n]*\n\s*", "\n", text)
    return re.sub(r"[^\S\n]+", " ", text).strip()


def split_text(text: str, max_length: int, first_max_length: int | None = None) -> list[str]:
    """Split text into chunks of at most `max_length` characters, in order.

    Args:
        text: the input; whitespace is normalised first.
        max_length: the longest chunk.
        first_max_length: a shorter limit for the first chunk, so that streamed audio
            starts sooner.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    normalized = normalize_text(text)
    if not normalized:
        return []
    first_limit = min(first_max_length or max_length, max_length)
    chunks: list[str] = []
    rest = normalized
    if first_limit < max_length and len(rest) > first_limit:
        head, rest = _take_prefix(rest, first_limit)
        chunks.append(head)
    chunks.extend(_split(rest, max_length, SENTENCE))
    return [c.replace("\n", " ") for c in chunks if c]


def _split(text: str, limit: int, level: int) -> list[str]:
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    if level < WORD:
        return _hard_split(text, limit)
    pieces = _cut(text, _boundaries(text, level))
    if len(pieces) == 1:
        return _split(text, limit, level - 1)
    out: list[str] = []
    current = ""
    for piece in pieces:
        if len((current + piece).strip()) <= limit:
            current += piece
            continue
        if current.strip():
            out.append(current.strip())
        if len(piece.strip()) > limit:
            out.extend(_split(piece, limit, level - 1))
            current = ""
        else:
            current = piece
    if current.strip():
        out.append(current.strip())
    return out


def _take_prefix(text: str, limit: int) -> tuple[str, str]:
    """The longest well-cut head of `text` within `limit`, and the rest."""
    for level in (SENTENCE, CLAUSE, WORD):
        cuts = [p for p in _boundaries(text, level) if len(text[:p].strip()) <= limit]
        if cuts:
            return text[: cuts[-1]].strip(), text[cuts[-1] :]
    head = _hard_split(text, limit)[0]
    return head, text[len(head) :]


def _boundaries(text: str, level: int) -> list[int]:
    finders: dict[int, Callable[[str], list[int]]] = {
        SENTENCE: _sentence_ends,
        CLAUSE: lambda t: [m.end() for m in _CLAUSE_END.finditer(t)],
        WORD: lambda t: [m.start() for m in re.finditer(r"\s", t)],
    }
    inside_tags = {p for m in _TAG.finditer(text) for p in range(m.start() + 1, m.end())}
    return sorted(
        p for p in set(finders[level](text)) if 0 < p < len(text) and p not in inside_tags
    )


def _sentence_ends(text: str) -> list[int]:
    ends = [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    for m in _SENTENCE_END.finditer(text):
        mark = m.group(0)
        is_dot = mark.startswith(".") and not mark.startswith("...")
        if is_dot and _is_abbreviation(text, m.start()):
            continue
        if mark.startswith(("...", "…")) and _next_is_lower(text, m.end()):
            continue
        ends.append(m.end())
    return ends


def _is_abbreviation(text: str, dot: int) -> bool:
    m = _WORD_BEFORE.search(text[max(0, dot - 12) : dot + 1])
    if not m:
        return False
    word = m.group(1)
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _next_is_lower(text: str, pos: int) -> bool:
    rest = text[pos:].lstrip()
    return bool(rest) and rest[0].islower()


def _cut(text: str, positions: list[int]) -> list[str]:
    bounds = [0, *positions, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _hard_split(text: str, limit: int) -> list[str]:
    """Cut between characters, never just before a combining mark."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + limit, len(text))
        while end < len(text) and end > start + 1 and unicodedata.combining(text[end]):
            end -= 1
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    return out
