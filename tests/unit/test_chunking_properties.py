"""Properties of `split_text` over arbitrary Unicode (hypothesis).

For any text and limits: it never raises, every chunk fits its limit, no chunk is
empty or padded, and the chunks hold exactly the input's non-whitespace characters
in their original order; only whitespace may change.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatterbox_serve.text.chunking import split_text

# Text that exercises every boundary kind, mixed with arbitrary code points.
_PIECES = st.sampled_from(
    [
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "\u00a0",
        "\u3000",
        ".",
        "...",
        "…",
        "!",
        "?",
        ",",
        ";",
        " - ",
        " — ",
        "。",
        "，",
        "Mr.",
        "e.g.",
        "U.S.",
        "3.14",
        '"',
        "」",
        ")",
        "\u0301",
        "\u200b",
        "\ufeff",
        "a",
        "Z",
        "字",
        "🙂",
        "\U0001f468\u200d\U0001f469",
    ]
)
TEXT = st.one_of(
    st.text(max_size=600),
    st.lists(st.one_of(_PIECES, st.text(max_size=12)), max_size=120).map("".join),
)


def _visible(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace())


@settings(
    max_examples=int(os.environ.get("CHUNKING_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=TEXT, limit=st.integers(1, 120), first=st.none() | st.integers(1, 150))
@example(text="a" * 50 + "\u0301" * 30, limit=10, first=None)
@example(text="Dr. A. B. Smith... went home. " * 9, limit=20, first=7)
@example(text="x\u3000" * 40, limit=3, first=1)
def test_split_text_keeps_every_character_in_order_within_limits(
    text: str, limit: int, first: int | None
) -> None:
    chunks = split_text(text, limit, first)
    assert _visible("".join(chunks)) == _visible(text)
    for i, chunk in enumerate(chunks):
        bound = min(first or limit, limit) if i == 0 else limit
        assert 0 < len(chunk) <= bound, (i, chunk, bound)
        assert chunk == chunk.strip() and "\n" not in chunk


@settings(max_examples=200, deadline=None)
@given(text=TEXT, limit=st.integers(1, 120))
def test_splitting_is_deterministic_and_idempotent_per_chunk(text: str, limit: int) -> None:
    chunks = split_text(text, limit)
    assert split_text(text, limit) == chunks
    for chunk in chunks:
        assert split_text(chunk, limit) == [chunk]
