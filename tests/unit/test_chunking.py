import re

import pytest

from chatterbox_serve.text.chunking import normalize_text, split_text
from tests.conftest import SHARED


def _letters(text: str) -> str:
    return re.sub(r"\s", "", text)


def test_short_text_is_one_chunk():
    assert split_text("  Hello   world.  ", 280) == ["Hello world."]


def test_empty_text_gives_no_chunks():
    assert split_text(" \n\t ", 280) == []


def test_long_text_keeps_every_character_in_order_and_respects_the_limit():
    text = (SHARED / "data/texts/long-en.txt").read_text()
    chunks = split_text(text, 280)
    assert max(len(c) for c in chunks) <= 280
    assert _letters("".join(chunks)) == _letters(text)
    # Sentence-aware: no chunk ends in the middle of a word when sentences fit.
    assert all(c[-1] in ".!?\"'”’:;," or c.endswith("Arrival") or c[-1].isalnum() for c in chunks)


def test_sentences_are_not_split_at_abbreviations_decimals_or_initials():
    text = "Dr. Smith paid $3.50 for it. Mr. J. R. Tolkien agreed, e.g. on Tuesday. Fine."
    chunks = split_text(text, 40)
    assert "Dr. Smith paid $3.50 for it." in chunks
    assert any(c.startswith("Mr. J. R. Tolkien") for c in chunks)


def test_mid_sentence_ellipsis_does_not_end_a_sentence():
    chunks = split_text("Well... maybe tomorrow, then. Yes.", 30)
    assert chunks[0] == "Well... maybe tomorrow, then."


def test_closing_quote_stays_with_its_sentence():
    chunks = split_text('He said "Stop!" Then he left the building quietly.', 20)
    assert chunks[0] == 'He said "Stop!"'


def test_cjk_sentences_split_at_full_width_punctuation():
    chunks = split_text("今天天气很好。我们去公园吧！你觉得怎么样？好的，我们走吧。", 12)
    assert chunks == ["今天天气很好。", "我们去公园吧！", "你觉得怎么样？", "好的，我们走吧。"]


def test_long_sentence_splits_at_clauses_then_words():
    sentence = (
        "one two three four five six, seven eight nine ten eleven twelve; "
        "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty."
    )
    chunks = split_text(sentence, 40)
    assert chunks[0] == "one two three four five six,"
    assert all(len(c) <= 40 for c in chunks)
    assert _letters("".join(chunks)) == _letters(sentence)


def test_word_longer_than_limit_is_cut_between_characters():
    chunks = split_text("a" * 95, 40)
    assert [len(c) for c in chunks] == [40, 40, 15]


def test_first_chunk_is_short_when_streaming():
    text = (SHARED / "data/texts/long-en.txt").read_text()
    chunks = split_text(text, 280, first_max_length=60)
    assert len(chunks[0]) <= 60
    assert _letters("".join(chunks)) == _letters(text)


@pytest.mark.parametrize("limit", [20, 50, 280])
def test_multilingual_sentences_round_trip(limit):
    import json

    for lang, sentence in json.loads((SHARED / "data/texts/multilingual.json").read_text()).items():
        chunks = split_text(sentence, limit)
        assert all(len(c) <= limit for c in chunks), lang
        assert _letters("".join(chunks)) == _letters(sentence), lang


def test_newlines_are_boundaries_and_become_spaces():
    assert normalize_text("a \n\n b  c") == "a\nb c"
    assert split_text("Title\nBody text here", 10) == ["Title", "Body text", "here"]
