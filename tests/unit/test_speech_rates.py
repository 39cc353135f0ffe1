"""Every chunk of every language fits T3 whole: its speech budget covers its speech, and
budget plus prompt fit the context, with the prompt counted by the real tokenizer.

For each of the 23 languages, 2,000 characters (the sample of
`shared/data/texts/multilingual.json`, repeated) are chunked by the server's planner
(`SpeechPipeline.plan`, default settings). Each chunk's speech budget must cover 1.5x its
expected speech at the language's speaking rate (`text/speech_rates.py`, sourced
there), and fit `VLLM_MAX_MODEL_LEN` together with its prompt: T3's conditioning rows,
the text tokens of the multilingual tokenizer as `model/tokenizer.py` builds it, and the
two start-of-speech rows.

Chinese goes through the Cangjie table as in production. The checkpoint's
Cangjie5_TC.json is not in CI, so the test writes the entries of the sample's
characters, as the Cangjie5 project's Cangjie5_TC.txt has them (github.com/Jackchows/
Cangjie5, MIT; the last code where a character has two, as `CangjieConverter` keeps it;
none shares its code with an earlier glyph, so no rank digit is lost).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.config import load_settings
from chatterbox_serve.engines.base import SPEECH_TOKENS_PER_SECOND, SynthesisRequest
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.model.t3.config import T3Config
from chatterbox_serve.pipeline import DirectSubmitter, SpeechJob, SpeechPipeline
from chatterbox_serve.text import speech_rates
from chatterbox_serve.text.languages import SUPPORTED_LANGUAGES

ROOT = Path(__file__).resolve().parents[2]
TEXTS = json.loads((ROOT.parent / "shared/data/texts/multilingual.json").read_text("utf-8"))
LENGTH = 2000
CANGJIE = [
    *("你\tonf", "好\tvnd", "欢\teno", "迎\tyhvl", "这\tyyk", "是\tamyo", "一\tm", "个\txol"),
    *("简\thlsa", "短\tokmrt", "的\thapm", "语\tivmmr", "音\tyta", "合\tomr", "成\tihs"),
    *("测\tebon", "试\tivipm"),
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("chatterbox_vllm", reason="the multilingual vocabulary ships with it")
    from chatterbox_serve.model.tokenizer import T3TextTokenizer

    checkpoint = tmp_path_factory.mktemp("cangjie")
    (checkpoint / "Cangjie5_TC.json").write_text(json.dumps(CANGJIE, ensure_ascii=False))
    tok = T3TextTokenizer.load(multilingual=True, checkpoint_dir=checkpoint)
    assert tok.kakasi is not None, "pykakasi reads Japanese kanji as kana"
    return tok


def _plan(text: str, language: str, streaming: bool = False) -> list[SynthesisRequest]:
    settings = load_settings({}, dotenv_path=None)
    pipeline = SpeechPipeline(settings, DirectSubmitter(SimulatedEngine()))
    template = SynthesisRequest("", language)
    return pipeline.plan(SpeechJob("rid", text, AudioFormat.WAV, template, streaming=streaming))


def _long(language: str) -> str:
    sample = TEXTS[language]
    return " ".join([sample] * (LENGTH // len(sample) + 1))[:LENGTH]


def test_the_sample_covers_every_supported_language() -> None:
    assert set(TEXTS) == set(SUPPORTED_LANGUAGES)


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("language", sorted(SUPPORTED_LANGUAGES))
def test_every_chunk_covers_its_speech_and_fits_the_context(
    tokenizer: Any, language: str, streaming: bool
) -> None:
    settings = load_settings({}, dotenv_path=None)
    text = _long(language)
    items = _plan(text, language, streaming)
    assert len(items) <= settings.chunking.max_chunks_per_request
    prompt_rows = T3Config.multilingual().cond_len + 2  # conditioning, start of speech x2
    for item in items:
        expected_s = speech_rates.expected_speech_s(item.text, language)
        budget = item.max_new_tokens
        assert budget is not None
        assert budget >= 1.5 * expected_s * SPEECH_TOKENS_PER_SECOND, (item.text, budget)
        ids = tokenizer.encode(item.text, language)
        assert speech_rates.text_tokens(item.text, language) >= len(ids)  # the plan's estimate
        assert prompt_rows + len(ids) + budget <= settings.engine.max_model_len
        assert budget <= settings.engine.max_new_tokens


def test_long_cjk_input_is_chunked_smaller_rather_than_failed() -> None:
    limits = speech_rates.BudgetLimits(0.25, 1000, 2048)  # the defaults
    for language in TEXTS:
        longest = max(len(i.text) for i in _plan(_long(language), language))
        limit = speech_rates.chunk_length(_long(language), language, 280, limits)
        assert longest <= limit
        if language in ("zh", "ja", "ko"):
            assert limit <= 100
        else:
            assert limit >= 199  # MAX_CHUNK_LENGTH (280) for alphabetic scripts
    # The old plan: one 280-character limit and 0.25 s of audio per character.
    zh = TEXTS["zh"] * 20
    old_budget = math.floor(len(zh[:280]) * 0.25 * SPEECH_TOKENS_PER_SECOND)
    assert old_budget < 1.5 * speech_rates.expected_speech_s(zh[:280], "zh") * 25


def test_mixed_script_text_is_chunked_for_its_slowest_script() -> None:
    text = "Hello there. " + "你好，欢迎。这是一个简短的语音合成测试。" * 30
    chunks = _plan(text, "en")
    limits = speech_rates.BudgetLimits(0.25, 1000, 2048)
    assert speech_rates.chunk_length(text, "en", 280, limits) < 280
    for item in chunks:
        expected_s = speech_rates.expected_speech_s(item.text, "en")
        assert item.max_new_tokens is not None
        assert item.max_new_tokens >= 1.5 * expected_s * SPEECH_TOKENS_PER_SECOND


def test_rates_follow_the_sources_written_down() -> None:
    rates = speech_rates.RATES
    assert rates["alphabetic"].speech_s == 0.068  # IReST: 68 ms/char read aloud
    assert rates["han_zh"].speech_s == pytest.approx(1 / 5.18, abs=0.01)  # 5.18 syll/s
    assert rates["kana"].speech_s == pytest.approx(1 / 7.84, abs=0.01)  # 7.84 morae/s
    assert speech_rates.PROMPT_ROWS == T3Config.multilingual().cond_len + 2
