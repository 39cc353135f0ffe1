import pytest
from pydantic import ValidationError

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.config import load_settings
from chatterbox_serve.errors import InvalidRequestError
from chatterbox_serve.protocol import SpeechRequest
from chatterbox_serve.voices.resolve import ResolvedVoice

SETTINGS = load_settings({"MAX_TOTAL_LENGTH": "50"}, dotenv_path=None)
DEFAULT = ResolvedVoice("default", None)


def _job(**body):
    return SpeechRequest(**{"input": "Hello", **body}).to_order(
        SETTINGS, body.pop("_voice", DEFAULT), "rid", streaming=False
    )


def test_defaults_follow_openai_and_settings():
    job = _job()
    assert job.format is AudioFormat.MP3 and job.speed == 1.0
    t = job.template.generation
    assert (t.exaggeration, t.temperature, job.template.language) == (0.5, 0.8, "en")
    assert (t.min_p, t.repetition_penalty, t.top_p) == (0.05, 1.2, 1.0)


def test_voice_may_be_a_name_or_an_id_object():
    assert SpeechRequest(input="x", voice="v1").voice_key == "v1"
    assert SpeechRequest(input="x", voice={"id": "voice_123"}).voice_key == "voice_123"


def test_unknown_fields_are_accepted():
    assert SpeechRequest(input="x", future_field=1).input == "x"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speed", 0.1),
        ("speed", 5),
        ("exaggeration", 3),
        ("cfg_weight", 1.5),
        ("temperature", 0),
        ("response_format", "ogg"),
        ("stream_format", "chunks"),
        ("seed", -1),
    ],
)
def test_out_of_range_fields_fail_validation(field, value):
    with pytest.raises(ValidationError) as info:
        SpeechRequest(input="x", **{field: value})
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "   "}, "input"),
        ({"input": "x" * 51}, "input"),
        ({"language": "xx"}, "language"),
        ({"instructions": "y" * 5000}, "instructions"),
    ],
)
def test_settings_dependent_limits_raise_invalid_request(body, param):
    with pytest.raises(InvalidRequestError) as info:
        _job(**body)
    assert info.value.param == param


def test_language_comes_from_request_then_voice_then_english():
    fr_voice = ResolvedVoice("v", None, language="fr")
    req = SpeechRequest(input="x")
    assert req.to_order(SETTINGS, fr_voice, "r", streaming=False).template.language == "fr"
    req = SpeechRequest(input="x", language="de-AT")
    assert req.to_order(SETTINGS, fr_voice, "r", streaming=False).template.language == "de"


def test_cfg_weight_is_per_request_and_instructions_warn():
    job = _job(cfg_weight=0.9, instructions="whisper")
    assert job.template.generation.cfg_weight == 0.9
    assert not any("cfg_weight" in w for w in job.warnings)
    assert any("instructions" in w for w in job.warnings)
    # Without one, the request gets CHATTERBOX_CFG_SCALE.
    assert _job().template.generation.cfg_weight == SETTINGS.generation.cfg_weight
    assert _job(cfg_weight=0.0).template.generation.cfg_weight == 0.0


def test_default_response_format_setting_applies_when_none_is_asked():
    wav = load_settings({"DEFAULT_RESPONSE_FORMAT": "wav"}, dotenv_path=None)
    voice = ResolvedVoice("default", None)
    assert SpeechRequest(input="Hi").to_order(wav, voice, "r", streaming=False).format is (
        AudioFormat.WAV
    )
    asked = SpeechRequest(input="Hi", response_format="flac")
    assert asked.to_order(wav, voice, "r", streaming=False).format is AudioFormat.FLAC
    assert SpeechRequest(input="Hi").to_order(SETTINGS, voice, "r", streaming=False).format is (
        AudioFormat.MP3
    )
