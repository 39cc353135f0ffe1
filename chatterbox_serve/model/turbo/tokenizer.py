"""Text to Turbo's T3 text-token ids: GPT-2 byte-level BPE from the checkpoint folder.

Upstream loads `AutoTokenizer.from_pretrained(checkpoint_dir)`; we build the same BPE
with the `tokenizers` library from `vocab.json` and `merges.txt`, then add the entries
of `added_tokens.json` (the paralinguistic tags below and GPT-2's `<|endoftext|>`) at
their recorded ids. Added tokens are matched before BPE, so a tag in the text becomes
its one token. No start or stop token is added: Turbo's T3 takes the ids as they are.

Punctuation is normalised first with Turbo's own table (`tts_turbo.punc_norm`, which
differs from the original model's), then reserved control words such as `[START]` are
neutralised as for the original (`neutralize_control_tokens`); the tags are not
control words and stay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatterbox_serve.errors import EngineError, InvalidRequestError
from chatterbox_serve.families import PARALINGUISTIC_TAGS as FAMILY_TAGS
from chatterbox_serve.model.tokenizer import neutralize_control_tokens
from chatterbox_serve.text.languages import languages_for, normalize_language

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
ADDED_TOKENS_FILE = "added_tokens.json"
TOKENIZER_FILES = (VOCAB_FILE, MERGES_FILE, ADDED_TOKENS_FILE)
END_OF_TEXT = "<|endoftext|>"
# The tags, declared with the family (re-exported for the checkpoint writer and tests).
PARALINGUISTIC_TAGS = FAMILY_TAGS

# Upstream `tts_turbo.punc_norm`'s replacements, in its order.
_PUNCTUATION = (
    ("…", ", "),
    (":", ","),
    ("—", "-"),
    ("–", "-"),
    (" ,", ","),
    ("“", '"'),
    ("”", '"'),
    ("‘", "'"),
    ("’", "'"),
)
_SENTENCE_ENDERS = (".", "!", "?", "-", ",")


def normalize_punctuation(text: str) -> str:
    """Upstream Turbo's clean-up: capital first letter, single spaces, its table, a full stop."""
    if not text:
        return "You need to add some text for me to talk."
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in _PUNCTUATION:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    return text if text.endswith(_SENTENCE_ENDERS) else text + "."


class TurboTextTokenizer:
    """Encodes one chunk of English text as Turbo T3 text-token ids."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.languages = languages_for(False)
        self.vocab_size: int = tokenizer.get_vocab_size()

    @classmethod
    def load(cls, checkpoint_dir: Path) -> TurboTextTokenizer:
        """The checkpoint folder's BPE with its added tokens at their recorded ids.

        Raises:
            EngineError: a file is missing, or an added token would get another id.
        """
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        missing = [n for n in TOKENIZER_FILES if not (checkpoint_dir / n).is_file()]
        if missing:
            raise EngineError(f"{checkpoint_dir} has no {', '.join(missing)} (Turbo tokenizer)")
        bpe = models.BPE.from_file(
            str(checkpoint_dir / VOCAB_FILE), str(checkpoint_dir / MERGES_FILE)
        )
        tokenizer = Tokenizer(bpe)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        added: dict[str, int] = json.loads((checkpoint_dir / ADDED_TOKENS_FILE).read_text())
        for token, token_id in sorted(added.items(), key=lambda item: item[1]):
            if token == END_OF_TEXT:
                tokenizer.add_special_tokens([AddedToken(token, special=True)])
            else:
                tokenizer.add_tokens([AddedToken(token, normalized=False)])
            if tokenizer.token_to_id(token) != token_id:
                raise EngineError(
                    f"{ADDED_TOKENS_FILE} puts {token!r} at id {token_id}, after a "
                    f"{tokenizer.get_vocab_size()}-entry vocabulary it would not be"
                )
        return cls(tokenizer)

    def check_language(self, language: str) -> str:
        """The normalised code, or an `InvalidRequestError`: Turbo speaks English only."""
        code = normalize_language(language)
        if code not in self.languages:
            raise InvalidRequestError(
                f"Language {language!r} is not supported by the Turbo model; "
                f"supported: {', '.join(sorted(self.languages))}",
                param="language",
            )
        return code

    def encode(self, text: str, language: str = "en") -> list[int]:
        """The ids of the normalised text; each paralinguistic tag is one id."""
        self.check_language(language)
        body = neutralize_control_tokens(normalize_punctuation(text))
        ids: list[int] = self.tokenizer.encode(body).ids
        return ids
