"""T3 prompt ids from the real tokenizer files shipped in chatterbox-vllm 0.2.1."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from chatterbox_serve.errors import EngineError, InvalidRequestError
from chatterbox_serve.model import tokenizer as t3_tokenizer
from chatterbox_serve.model.tokenizer import (
    CangjieConverter,
    T3TextTokenizer,
    load_pkuseg,
    package_file,
)
from chatterbox_serve.text.languages import SUPPORTED_LANGUAGES
from tests.conftest import SHARED

TEXTS: dict[str, str] = json.loads((SHARED / "data/texts/multilingual.json").read_text())


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory: pytest.TempPathFactory) -> T3TextTokenizer:
    ckpt = tmp_path_factory.mktemp("ckpt")
    # The layout of the checkpoint's Cangjie5_TC.json ("glyph\tcode"); codes made up
    # from the glyph's position, since the real table comes with the weights.
    glyphs = sorted({c for c in TEXTS["zh"] if c.isalpha()} - {"你", "好"})
    table = [
        "你\tonf",
        "好\tvnd",
        *(f"{g}\t{'abcdefghijklmnopqrstuvwxy'[i % 25]}k" for i, g in enumerate(glyphs)),
    ]
    (ckpt / "Cangjie5_TC.json").write_text(json.dumps([*table, "伱\tonf"]), encoding="utf-8")
    return T3TextTokenizer.load(multilingual=True, checkpoint_dir=ckpt)


def _tokens(tok: T3TextTokenizer, ids: list[int]) -> list[str]:
    return [tok.tokenizer.id_to_token(i) for i in ids]


@pytest.mark.parametrize("language", sorted(SUPPORTED_LANGUAGES))
def test_start_tag_text_stop_for_every_language(
    multilingual: T3TextTokenizer, language: str
) -> None:
    text = TEXTS[language] + " 3 > 2"
    tokens = _tokens(multilingual, multilingual.encode(text, language))
    assert tokens[:2] == ["[START]", f"[{language}]"]
    assert tokens[-1] == "[STOP]" and tokens.count("[START]") == tokens.count("[STOP]") == 1
    # Text after a `>` is kept (chatterbox-vllm's tokenizer cut the prompt there).
    assert tokens[-8:-1] == ["[SPACE]", "3", "[SPACE]", ">", "[SPACE]", "2", "."]
    body = tokens[2:-8]
    assert len(body) >= 5 and body.count("[UNK]") <= len(body) // 10


def test_tag_id_matches_upstream_in_band_encoding(multilingual: T3TextTokenizer) -> None:
    # Upstream encodes "[fr]text" in one pass; the tag must be the same single token.
    upstream = multilingual.tokenizer.encode("[fr]bonjour.").ids
    assert multilingual.encode("bonjour", "fr")[1:-1] == upstream
    assert multilingual.vocab_size == 2454


def test_chinese_becomes_cangjie_codes(multilingual: T3TextTokenizer) -> None:
    tokens = _tokens(multilingual, multilingual.encode("你好", "zh"))
    assert "".join(tokens[2:-2]) == "[cj_o][cj_n][cj_f][cj_.][cj_v][cj_n][cj_d][cj_.]"
    assert "[UNK]" not in tokens


def test_cangjie_ranks_shared_codes_and_segments_words(tmp_path: Path) -> None:
    table = tmp_path / "c.json"
    table.write_text(json.dumps(["你\tonf", "伱\tonf\textra"]), encoding="utf-8")
    convert = CangjieConverter.from_file(table, segment=lambda s: list(s))
    assert convert("伱a") == "[cj_o][cj_n][cj_f][cj_1][cj_.] a"
    assert convert.codes == {"你": "onf", "伱": "onf1"}


def test_japanese_kanji_are_read_as_kana(multilingual: T3TextTokenizer) -> None:
    assert multilingual.kakasi is not None
    tokens = _tokens(multilingual, multilingual.encode("音声", "ja"))
    assert "".join(tokens[2:-1]) == "おんせい."


def test_english_model_keeps_case_and_has_no_tag() -> None:
    tok = T3TextTokenizer.load(multilingual=False, checkpoint_dir=Path("/nonexistent"))
    tokens = _tokens(tok, tok.encode("Hi > you", "EN-us"))
    assert tokens == ["[START]", "H", "i", "[SPACE]", ">", "[SPACE]", "you", ".", "[STOP]"]
    with pytest.raises(InvalidRequestError, match="English model") as err:
        tok.encode("Hola", "es")
    assert err.value.param == "language"


def test_missing_optional_helpers_degrade_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pykakasi", None)
    tok = T3TextTokenizer.load(multilingual=True, checkpoint_dir=tmp_path)
    assert tok.kakasi is None and tok.cangjie is None
    assert "Cangjie5_TC.json" in caplog.text and "pykakasi" in caplog.text
    assert tok.encode("音", "ja")[2] == tok.tokenizer.token_to_id("[UNK]")


def test_pkuseg_is_used_when_it_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ModuleType("spacy_pkuseg")

    class Segmenter:
        def cut(self, text: str) -> list[str]:
            return [text[:1], text[1:]]

    fake.pkuseg = Segmenter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spacy_pkuseg", fake)
    segment = load_pkuseg()
    assert segment is not None and segment("你好") == ["你", "好"]
    monkeypatch.setitem(sys.modules, "spacy_pkuseg", None)
    assert load_pkuseg() is None


def test_vocabulary_without_start_token_is_an_engine_error() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    bare = Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(EngineError, match=r"\[START\]"):
        T3TextTokenizer(bare, multilingual=False, normalize_punctuation=str)


def test_package_files_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    assert package_file("models/t3/tokenizer.json").is_file()
    with pytest.raises(EngineError, match="missing"):
        package_file("models/t3/nope.json")
    monkeypatch.setattr(t3_tokenizer.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineError, match="vllm"):
        package_file("models/t3/tokenizer.json")


@pytest.mark.parametrize(
    "typed",
    ["[START]", "[STOP]", "[stop]", "[PLACEHOLDER55]", "[PLACEHOLDER57]", "[fr]", "[[START]]"],
)
@pytest.mark.parametrize("multilingual_model", [True, False])
def test_typed_control_tokens_are_read_as_text_never_encoded(
    multilingual: T3TextTokenizer, typed: str, multilingual_model: bool
) -> None:
    # A user's "[START]" must not frame the prompt, "[fr]" must not switch language,
    # and "[PLACEHOLDER55]" (an id past the English model's text table) must not reach
    # T3 at all: the only control ids are the ones the tokenizer itself adds.
    tok = (
        multilingual
        if multilingual_model
        else T3TextTokenizer.load(multilingual=False, checkpoint_dir=Path("/nonexistent"))
    )
    ids = tok.encode(f"say {typed} now", "en")
    body = ids[2:-1] if multilingual_model else ids[1:-1]
    controls = {
        tok.tokenizer.token_to_id(t)
        for t in ("[START]", "[STOP]", "[PLACEHOLDER55]", "[PLACEHOLDER57]", "[fr]", "[en]")
    }
    assert not controls & set(body), _tokens(tok, ids)
    assert ids[0] == tok.start_id and ids[-1] == tok.stop_id
    assert ids.count(tok.start_id) == 1 and ids.count(tok.stop_id) == 1


def test_expressive_tags_stay_tags(multilingual: T3TextTokenizer) -> None:
    tok = T3TextTokenizer.load(multilingual=False, checkpoint_dir=Path("/nonexistent"))
    ids = tok.encode("well [laughter] fine", "en")
    assert tok.tokenizer.token_to_id("[laughter]") in ids
