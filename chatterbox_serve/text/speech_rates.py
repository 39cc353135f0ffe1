"""How much prompt and speech a text makes, per script: chunk lengths and speech budgets.

A chunk must fit T3 whole: its prompt (conditioning, text tokens, start of speech) and
its speech tokens share vLLM's `max_model_len`, and the speech is cut at the item's
token budget (`CHATTERBOX_MAX_NEW_TOKENS` at most). Both grow with the characters at a
rate that depends on the script: a Chinese character costs about 5 text tokens (its
Cangjie code) and 0.2 s of speech, a Latin letter about 1 token and 0.07 s. One limit
in characters for every language (280) gave Chinese chunks that could never finish.

Rates per character, by script (the `RATES` table). Speech is read-aloud speed; text
tokens are those of the multilingual tokenizer as `model/tokenizer.py` builds them,
measured on `shared/data/texts/multilingual.json` and bounded from above:

| script (languages)                  | speech s/char | text tokens/char |
|-------------------------------------|---------------|------------------|
| alphabetic (Latin, Cyrillic, Greek) | 0.068         | 1.5              |
| abjad/abugida (ar, he, hi)          | 0.10          | 1.5              |
| Han in Chinese                      | 0.20          | 5.5              |
| Han in Japanese (kanji)             | 0.26          | 3.0              |
| kana                                | 0.13          | 1.5              |
| Hangul                              | 0.20          | 3.0              |

- alphabetic: IReST, 14 languages read aloud, 68 ms per character (95% CI 65-71) [1].
  Tokens measured 0.65-1.11 per character on the samples (Greek highest); NFKD may
  split a letter from its accent, hence 1.5.
- abjad/abugida: vowels are unwritten (ar, he) or separate characters (hi), so a
  character carries more speech; IReST leaves Arabic and Hebrew out of its 14 and gives
  863 +/- 234 characters/min over all 17 languages [1]: 0.10 s is about that mean minus
  one SD (629/min). Tokens measured 1.00-1.02.
- Han in Chinese: one syllable per character at Mandarin's 5.18 syllables/s [2]. Tokens:
  the Cangjie code's letters plus `[cj_.]`, on average 4.9 over the 3,755 GB2312 level-1
  characters in the Cangjie5 table [3] (4.3 on the sample), plus a `[SPACE]` per word
  where pkuseg segments words.
- Han in Japanese: about two morae per kanji at 7.84 morae/s [2]; tokens: its kana
  reading, with voiced marks split off by NFKD.
- kana: one mora per kana at 7.84/s [2]; tokens: 1, plus a voiced mark NFKD splits off
  (1.33 measured on the Japanese sample, kanji included).
- Hangul: one syllable per block; [2] has no Korean, so its slowest rate (5.18/s).
  Tokens: NFKD splits a block into 2-3 jamo (2.15 measured).

[1] Trauzettel-Klosinski S., Dietz K. and the IReST Study Group, "Standardized
    Assessment of Reading Performance: The New International Reading Speed Texts
    IReST", Invest. Ophthalmol. Vis. Sci. 53(9):5452-5461, 2012 (abstract figures).
[2] Pellegrino F., Coupe C., Marsico E., "A cross-language perspective on speech
    information rate", Language 87(3):539-558, 2011 (syllables/s: Mandarin 5.18,
    English 6.19, German 5.97, French 7.18, Italian 6.99, Spanish 7.82, Japanese 7.84).
[3] The Cangjie5 table (github.com/Jackchows/Cangjie5, Cangjie5_TC.txt), the source
    of the checkpoint's Cangjie5_TC.json; measured with `CangjieConverter`.

From these, per chunk:

- **speech budget**: the audio cap in tokens, `CHATTERBOX_MAX_AUDIO_S_PER_CHAR` per
  alphabetic character and the same multiple of each other script's speech (3.7x by
  default), at least `MIN_AUDIO_CAP_S`, then lowered to what the engine allows
  (`max_new_tokens`) and to what the context leaves after the prompt (`max_model_len`);
- **chunk length**: the longest chunk, in characters of the text's slowest script,
  whose budget still covers `REQUIRED_HEADROOM` times its expected speech.

Imports neither torch nor the tokenizer: the pipeline plans on the CPU side.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

from chatterbox_serve.engines.base import SPEECH_TOKENS_PER_SECOND
from chatterbox_serve.model.t3.config import T3Config

# A short text's audio cap: enough for a few words said slowly.
MIN_AUDIO_CAP_S = 5.0
# A chunk is cut short enough that its budget covers twice its expected speech: slower
# voices, pauses and exaggeration all lengthen it (the criterion is 1.5x).
REQUIRED_HEADROOM = 2.0
# Prompt rows besides the text: conditioning (speaker, perceiver, emotion) and the two
# start-of-speech rows; text tokens add [START], the language tag and [STOP].
PROMPT_ROWS = T3Config.multilingual().cond_len + 2
TEXT_FRAMING_TOKENS = 3


@dataclass(frozen=True)
class ScriptRate:
    """One script's cost per character (see the module docstring for sources)."""

    speech_s: float
    text_tokens: float


ALPHABETIC = ScriptRate(speech_s=0.068, text_tokens=1.5)
RATES: dict[str, ScriptRate] = {
    "alphabetic": ALPHABETIC,
    "abjad": ScriptRate(speech_s=0.10, text_tokens=1.5),
    "han_zh": ScriptRate(speech_s=0.20, text_tokens=5.5),
    "han_ja": ScriptRate(speech_s=0.26, text_tokens=3.0),
    "kana": ScriptRate(speech_s=0.13, text_tokens=1.5),
    "hangul": ScriptRate(speech_s=0.20, text_tokens=3.0),
}
# Languages whose letters carry more speech per character than the alphabetic rate.
_ABJAD_LANGUAGES = frozenset({"ar", "he", "hi"})


@dataclass(frozen=True)
class BudgetLimits:
    """What bounds a chunk's speech: the operator's audio cap and the engine's limits."""

    audio_s_per_char: float
    max_new_tokens: int
    max_model_len: int
    # T3's prompt rows besides the text (the family's conditioning and start rows).
    prompt_rows: int = PROMPT_ROWS


def script_of(ch: str, language: str) -> str:
    """The `RATES` key of one character in a text of `language`."""
    code = ord(ch)
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF:
        return "kana"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return "hangul"
    if unicodedata.category(ch) == "Lo" and "CJK" in unicodedata.name(ch, ""):
        return "han_ja" if language == "ja" else "han_zh"
    return "abjad" if language in _ABJAD_LANGUAGES else "alphabetic"


def expected_speech_s(text: str, language: str) -> float:
    """Seconds a text takes read aloud at the `RATES` speeds."""
    return sum(RATES[script_of(ch, language)].speech_s for ch in text)


def text_tokens(text: str, language: str) -> int:
    """An upper estimate of the text's T3 text tokens, framing included."""
    body = sum(RATES[script_of(ch, language)].text_tokens for ch in text)
    return TEXT_FRAMING_TOKENS + math.ceil(body)


def audio_cap_s(text: str, language: str, audio_s_per_char: float) -> float:
    """Most seconds of audio `text` may become: the cap per alphabetic character,
    scaled by each character's speech against the alphabetic rate."""
    scale = audio_s_per_char / ALPHABETIC.speech_s
    return max(MIN_AUDIO_CAP_S, scale * expected_speech_s(text, language))


def speech_budget(text: str, language: str, limits: BudgetLimits) -> int:
    """Speech tokens a chunk may take: its audio cap, within what the engine allows."""
    cap_s = audio_cap_s(text, language, limits.audio_s_per_char)
    cap = math.floor(cap_s * SPEECH_TOKENS_PER_SECOND)
    return max(1, min(cap, _engine_room(text, language, limits)))


def chunk_length(text: str, language: str, configured: int, limits: BudgetLimits) -> int:
    """The chunk length for `text`: `configured`, or less where its slowest script needs.

    The longest length (in characters of the slowest script present, the one that costs
    most prompt and speech per character) whose engine room, `max_new_tokens` and the
    context after the prompt, holds `REQUIRED_HEADROOM` times its expected speech. The
    audio cap (`CHATTERBOX_MAX_AUDIO_S_PER_CHAR`) is left out: it grows with the chunk.
    """
    scripts = {script_of(ch, language) for ch in text if not ch.isspace()}
    slowest = max(scripts, default="alphabetic", key=lambda s: _cost(RATES[s]))
    probe = _probe(slowest, language)

    def fits(length: int) -> bool:
        chunk = probe * length
        needed = REQUIRED_HEADROOM * expected_speech_s(chunk, language) * SPEECH_TOKENS_PER_SECOND
        return _engine_room(chunk, language, limits) >= needed

    low, high = 1, configured  # fits(length) holds up to some length, then never again
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def _engine_room(text: str, language: str, limits: BudgetLimits) -> int:
    context = limits.max_model_len - limits.prompt_rows - text_tokens(text, language)
    return min(limits.max_new_tokens, context)


def _cost(rate: ScriptRate) -> float:
    return rate.text_tokens + REQUIRED_HEADROOM * rate.speech_s * SPEECH_TOKENS_PER_SECOND


def _probe(script: str, language: str) -> str:
    """One character of `script` as `script_of` sees it in `language`."""
    sample = {"kana": "か", "hangul": "한", "han_ja": "語", "han_zh": "語"}
    return sample.get(script, "a")
