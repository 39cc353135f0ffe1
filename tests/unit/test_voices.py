import pytest

from chatterbox_serve.engines.base import VoicePrompt
from chatterbox_serve.errors import VoiceNotFoundError
from chatterbox_serve.voices.resolve import (
    OPENAI_VOICE_NAMES,
    EmptyVoiceLibrary,
    ResolvedVoice,
    resolve_voice,
)


class _OneVoice:
    def __init__(self) -> None:
        self.voice = ResolvedVoice("alloy", VoicePrompt.from_bytes(b"x"), "fr")

    def find(self, key):
        return self.voice if key == "alloy" else None

    def default(self):
        return None


def test_omitted_voice_is_builtin_default():
    v = resolve_voice(None, EmptyVoiceLibrary())
    assert v.prompt is None and v.name == "default"


@pytest.mark.parametrize("name", sorted(OPENAI_VOICE_NAMES))
def test_openai_names_mean_default_voice(name):
    assert resolve_voice(name, EmptyVoiceLibrary()).prompt is None


def test_library_voice_wins_over_openai_name():
    assert resolve_voice("alloy", _OneVoice()).language == "fr"


def test_unknown_voice_is_404_naming_the_param():
    with pytest.raises(VoiceNotFoundError) as info:
        resolve_voice("nobody", EmptyVoiceLibrary())
    assert info.value.status_code == 404 and info.value.param == "voice"
