import json

from chatterbox_serve.text.languages import SUPPORTED_LANGUAGES, languages_for, normalize_language
from tests.conftest import SHARED


def test_supported_languages_match_the_multilingual_test_set():
    sentences = json.loads((SHARED / "data/texts/multilingual.json").read_text())
    assert set(sentences) == set(SUPPORTED_LANGUAGES)
    assert len(SUPPORTED_LANGUAGES) == 23


def test_english_model_speaks_only_english():
    assert set(languages_for(False)) == {"en"}


def test_region_suffix_and_case_are_normalised():
    assert normalize_language("pt-BR") == "pt"
    assert normalize_language(" ZH_cn ") == "zh"
