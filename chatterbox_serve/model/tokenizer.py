"""Text to T3 text-token ids, in the layout upstream Chatterbox trained on.

The engine hands vLLM token ids (a `TokensPrompt`), not text, because the tokenizer
chatterbox-vllm 0.2.1 registers for the multilingual model garbles prompts:
it lower-cases `[START]` and `[STOP]` into plain characters, puts the language tag in
front of `[START]`, and cuts the prompt at the first `>` of the user's text. Upstream
Chatterbox feeds `[START] [xx] text [STOP]`; this module builds exactly that.

vLLM still loads chatterbox-vllm's tokenizer by name, because the T3 model sizes its
text embedding from that name (704 entries for `EnTokenizer`, 2454 otherwise); it is
then only used for vLLM's dummy profiling prompt.

The vocabulary files are the ones chatterbox-vllm ships, so ids match what its vLLM
model embeds. Language-specific steps follow upstream's multilingual tokenizer:
lower-case and NFKD for every language (NFKD also splits Hangul into the jamo the
vocabulary holds), Cangjie codes for Chinese, kana for Japanese kanji. Upstream's
optional Hebrew diacritics and Russian stress marks are not applied.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatterbox_serve.errors import EngineError, InvalidRequestError
from chatterbox_serve.text.languages import languages_for, normalize_language

logger = logging.getLogger(__name__)

START = "[START]"
STOP = "[STOP]"
SPACE = "[SPACE]"
ENGLISH_VOCAB = "models/t3/tokenizer.json"
MULTILINGUAL_VOCAB = "models/t3/grapheme_mtl_merged_expanded_v1.json"
CANGJIE_FILE = "Cangjie5_TC.json"
# Vocabulary entries the model reserves for itself: framing, padding, unused slots,
# language tags and Cangjie codes. Typed by a user they would be encoded as those
# tokens (a `[fr]` switches language mid-text; with the English model
# `[PLACEHOLDER55]` is an id past T3's text table and failed the whole batch), so
# their brackets are dropped and the word is read as text. Expressive tags such as
# `[laughter]` or `[sigh]` stay: they are meant for users.
CONTROL_TOKEN = re.compile(
    r"\[(START|STOP|UNK|SPACE|PAD|SEP|CLS|MASK|PLACEHOLDER\d+|cj_[^\[\]\s]*|[a-z]{2})\]",
    re.IGNORECASE,
)


def neutralize_control_tokens(text: str) -> str:
    """`text` with every reserved `[TOKEN]` written as plain `TOKEN`.

    Repeated until none is left: dropping one pair of brackets can close another
    (`[[START]]`). Each pass shortens the text, so this ends.
    """
    while True:
        text, count = CONTROL_TOKEN.subn(r"\1", text)
        if count == 0:
            return text


def package_file(relative: str) -> Path:
    """A data file inside the installed chatterbox-vllm package, found without importing it.

    Importing `chatterbox_vllm.models.t3` would import vLLM; `find_spec` on the top
    package does not.
    """
    spec = importlib.util.find_spec("chatterbox_vllm")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("chatterbox-vllm is not installed; install the `vllm` extra")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise EngineError(f"chatterbox-vllm package file {relative} is missing")
    return path


class CangjieConverter:
    """Writes each Chinese character as its Cangjie code, the way the T3 vocabulary spells it."""

    def __init__(
        self, codes: dict[str, str], segment: Callable[[str], list[str]] | None = None
    ) -> None:
        self.codes = codes
        self.segment = segment

    @classmethod
    def from_file(cls, path: Path, segment: Callable[[str], list[str]] | None) -> CangjieConverter:
        """Read the `Cangjie5_TC.json` table of the checkpoint (`"glyph\\tcode..."` lines)."""
        glyph_code: dict[str, str] = {}
        code_glyphs: dict[str, list[str]] = {}
        for entry in json.loads(path.read_text(encoding="utf-8")):
            glyph, code = entry.split("\t")[:2]
            glyph_code[glyph] = code
            code_glyphs.setdefault(code, []).append(glyph)
        # Glyphs sharing a code are told apart by their rank in the table, as upstream does.
        codes = {}
        for glyph, code in glyph_code.items():
            rank = code_glyphs[code].index(glyph)
            codes[glyph] = code + (str(rank) if rank > 0 else "")
        return cls(codes, segment)

    def __call__(self, text: str) -> str:
        if self.segment is not None:
            text = " ".join(self.segment(text))
        out = []
        for ch in text:
            code = self.codes.get(ch) if unicodedata.category(ch) == "Lo" else None
            out.append(ch if code is None else "".join(f"[cj_{c}]" for c in code) + "[cj_.]")
        return "".join(out)


def load_pkuseg() -> Callable[[str], list[str]] | None:
    """pkuseg word segmentation for Chinese, or None when it cannot load (it downloads a model)."""
    try:
        module = importlib.import_module("spacy_pkuseg")
        segmenter = module.pkuseg()
    except Exception as exc:  # ImportError, or no network for its model download
        logger.warning("Chinese word segmentation disabled (spacy_pkuseg: %s)", exc)
        return None
    cut: Callable[[str], list[str]] = segmenter.cut
    return cut


def japanese_to_kana(text: str, kakasi: Any) -> str:
    """Replace kanji words by their hiragana reading; kana and other text stay as they are."""
    out = []
    for part in kakasi.convert(text):
        orig, hira = part["orig"], part["hira"]
        if any(0x4E00 <= ord(c) <= 0x9FFF for c in orig):
            # The particles は/へ after a kanji word are read apart, as upstream spaces them.
            out.append(" " + hira if hira[:1] in ("は", "へ") else hira)
        else:
            out.append(orig)
    return unicodedata.normalize("NFKD", "".join(out))


def load_kakasi() -> Any | None:
    """A pykakasi converter, or None when pykakasi is not installed."""
    try:
        return importlib.import_module("pykakasi").kakasi()
    except ImportError:
        logger.warning("pykakasi is not installed; Japanese kanji are passed through")
        return None


class T3TextTokenizer:
    """Encodes one chunk of text in one language as T3 prompt token ids."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        multilingual: bool,
        normalize_punctuation: Callable[[str], str],
        cangjie: CangjieConverter | None = None,
        kakasi: Any | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.multilingual = multilingual
        self.languages = languages_for(multilingual)
        self.normalize_punctuation = normalize_punctuation
        self.cangjie = cangjie
        self.kakasi = kakasi
        self.start_id = self._token_id(START)
        self.stop_id = self._token_id(STOP)
        self.vocab_size: int = tokenizer.get_vocab_size()

    @classmethod
    def load(cls, *, multilingual: bool, checkpoint_dir: Path) -> T3TextTokenizer:
        """The tokenizer for one model variant; Chinese needs the checkpoint's Cangjie table."""
        from tokenizers import Tokenizer

        text_utils = importlib.import_module("chatterbox_vllm.text_utils")
        vocab = package_file(MULTILINGUAL_VOCAB if multilingual else ENGLISH_VOCAB)
        cangjie = kakasi = None
        if multilingual:
            table = checkpoint_dir / CANGJIE_FILE
            if table.is_file():
                cangjie = CangjieConverter.from_file(table, load_pkuseg())
            else:
                logger.warning("%s not in %s; Chinese text will be unreadable", table.name, table)
            kakasi = load_kakasi()
        return cls(
            Tokenizer.from_file(str(vocab)),
            multilingual=multilingual,
            normalize_punctuation=text_utils.punc_norm,
            cangjie=cangjie,
            kakasi=kakasi,
        )

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise EngineError(f"T3 vocabulary has no {token} token")
        return int(token_id)

    def check_language(self, language: str) -> str:
        """The normalised code, or an `InvalidRequestError` naming the languages this model has."""
        code = normalize_language(language)
        if code not in self.languages:
            model = "multilingual" if self.multilingual else "English"
            raise InvalidRequestError(
                f"Language {language!r} is not supported by the {model} model; "
                f"supported: {', '.join(sorted(self.languages))}",
                param="language",
            )
        return code

    def encode(self, text: str, language: str) -> list[int]:
        """`[START]`, the language tag (multilingual only), the text, `[STOP]`, as ids."""
        code = self.check_language(language)
        body = neutralize_control_tokens(self.normalize_punctuation(text))
        prefix = [self.start_id]
        if self.multilingual:
            body = unicodedata.normalize("NFKD", body.lower())
            if code == "zh" and self.cangjie is not None:
                body = self.cangjie(body)
            elif code == "ja" and self.kakasi is not None:
                body = japanese_to_kana(body, self.kakasi)
            prefix.append(self._token_id(f"[{code}]"))
        ids = self.tokenizer.encode(body.replace(" ", SPACE)).ids
        return [*prefix, *ids, self.stop_id]
