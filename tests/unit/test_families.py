"""Model families: the names a request's `model` takes, what a family loads, and what
differs per family (defaults, ignored fields, token caps, voices, tags)."""

from __future__ import annotations

import pytest

from chatterbox_serve.config import ConfigError, load_settings
from chatterbox_serve.errors import InvalidRequestError, ModelNotFoundError, error_payload
from chatterbox_serve.families import (
    OPENAI_MODEL_NAMES,
    PARALINGUISTIC_TAGS,
    ModelFamily,
    model_names,
    resolve_model,
)
from chatterbox_serve.generation import GenerationParameters, family_defaults, ignored_given
from chatterbox_serve.jobs.protocol import LongSpeechRequest
from chatterbox_serve.protocol import SpeechRequest
from chatterbox_serve.speech.plan import budget_limits, plan_chunks, token_budget
from chatterbox_serve.text.chunking import split_text
from chatterbox_serve.voices import ResolvedVoice

ORIGINAL, MULTILINGUAL, TURBO = ModelFamily.ORIGINAL, ModelFamily.MULTILINGUAL, ModelFamily.TURBO


def _settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(env, dotenv_path=None)


def test_unset_models_load_the_one_family_use_multilingual_model_names() -> None:
    assert _settings().families == (MULTILINGUAL,)
    assert _settings(USE_MULTILINGUAL_MODEL="false").families == (ORIGINAL,)
    s = _settings(CHATTERBOX_MODELS="chatterbox-turbo, chatterbox")
    assert s.families == (TURBO, ORIGINAL) and s.engine.default_family is TURBO
    s = _settings(
        CHATTERBOX_MODELS="chatterbox-turbo,chatterbox", CHATTERBOX_DEFAULT_MODEL="chatterbox"
    )
    assert s.engine.default_family is ORIGINAL


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"CHATTERBOX_MODELS": "turbo"}, "CHATTERBOX_MODELS"),
        ({"CHATTERBOX_MODELS": "chatterbox,chatterbox"}, "CHATTERBOX_MODELS"),
        ({"CHATTERBOX_DEFAULT_MODEL": "chatterbox-turbo"}, "CHATTERBOX_DEFAULT_MODEL"),
    ],
)
def test_bad_family_settings_stop_startup_naming_the_variable(
    env: dict[str, str], names: str
) -> None:
    with pytest.raises(ConfigError, match=names):
        _settings(**env)


def test_an_engine_gets_its_one_family_from_for_family() -> None:
    s = _settings(CHATTERBOX_MODELS="chatterbox-multilingual,chatterbox-turbo")
    with pytest.raises(ConfigError, match="for_family"):
        _ = s.family
    turbo = s.for_family(TURBO)
    assert turbo.family is TURBO and not turbo.engine.use_multilingual_model
    assert s.for_family(MULTILINGUAL).engine.use_multilingual_model
    assert s.for_family(ORIGINAL).family is ORIGINAL
    assert _settings().family is MULTILINGUAL  # the default config needs no for_family
    dirs = _settings(CHATTERBOX_MODEL_DIR="/a", CHATTERBOX_TURBO_MODEL_DIR="/t").engine
    assert (dirs.model_dir_for(TURBO), dirs.model_dir_for(ORIGINAL)) == ("/t", "/a")


def test_model_names_resolve_to_loaded_families_or_404() -> None:
    loaded = (MULTILINGUAL, TURBO)
    assert resolve_model("chatterbox-turbo", loaded, MULTILINGUAL) is TURBO
    assert resolve_model(None, loaded, TURBO) is TURBO
    for name in OPENAI_MODEL_NAMES:
        assert resolve_model(name, loaded, TURBO) is TURBO
    # The multilingual model speaks English: `chatterbox` keeps working without the
    # English family, as on every configuration before families.
    assert resolve_model("chatterbox", loaded, TURBO) is MULTILINGUAL
    assert resolve_model("chatterbox", (ORIGINAL, MULTILINGUAL), TURBO) is ORIGINAL
    for name in ("chatterbox-multilingual", "whisper-1", "Chatterbox-Turbo"):
        with pytest.raises(ModelNotFoundError) as err:
            resolve_model(name, (ORIGINAL, TURBO), TURBO)
        payload = error_payload(err.value, "rid")
        assert payload.status_code == 404
        assert payload.body["error"]["param"] == "model"
        assert payload.body["error"]["code"] == "model_not_found"
    assert model_names(loaded) == [
        "chatterbox-multilingual",
        "chatterbox-turbo",
        *OPENAI_MODEL_NAMES,
    ]


def test_turbo_takes_upstreams_defaults_and_the_operators_settings_over_them() -> None:
    turbo = family_defaults(TURBO)
    assert (turbo.temperature, turbo.top_k, turbo.top_p, turbo.repetition_penalty) == (
        0.8,
        1000,
        0.95,
        1.2,
    )
    assert family_defaults(ORIGINAL) == GenerationParameters()
    s = _settings(TEMPERATURE="0.5")
    assert s.generation.parameters(TURBO) == GenerationParameters(
        cfg_weight=0.0, temperature=0.5, top_p=0.95, min_p=0.0, top_k=1000
    )
    assert s.generation.parameters(ORIGINAL).top_p == 1.0
    assert _settings(CHATTERBOX_TOP_P="0.9").generation.parameters(TURBO).top_p == 0.9


def test_fields_a_family_ignores_are_named() -> None:
    given = {"cfg_weight": 0.3, "min_p": 0.1, "temperature": 0.7, "top_k": 50}
    assert ignored_given(given, TURBO) == ("cfg_weight", "min_p")
    assert ignored_given(given, MULTILINGUAL) == ("top_k",)
    assert ignored_given({"temperature": 0.7}, TURBO) == ()


def test_a_speech_order_carries_family_defaults_and_ignored_fields() -> None:
    s = _settings(CHATTERBOX_MODELS="chatterbox-multilingual,chatterbox-turbo")
    voice = ResolvedVoice(name="default", prompt=None)
    body = SpeechRequest(input="Hi [laugh] there.", model="chatterbox-turbo", exaggeration=0.9)
    order = body.to_order(s, voice, "rid", streaming=False)
    assert order.template.family is TURBO
    assert order.template.generation.top_p == 0.95
    assert order.ignored_fields == ("exaggeration",)
    tts1 = SpeechRequest(input="Hola.", model="tts-1", language="es", top_k=20)
    order = tts1.to_order(s, voice, "rid", streaming=False)
    assert order.template.family is MULTILINGUAL and order.ignored_fields == ("top_k",)
    with pytest.raises(InvalidRequestError, match="not supported by chatterbox-turbo"):
        SpeechRequest(input="Hola.", model="chatterbox-turbo", language="es").to_order(
            s, voice, "rid", streaming=False
        )


@pytest.mark.parametrize(("seconds", "ok"), [(5.0, False), (3.2, False), (5.5, True)])
@pytest.mark.parametrize("model", ["chatterbox-turbo", "chatterbox"])
def test_turbo_refuses_a_voice_of_five_seconds_or_less_before_any_work(
    seconds: float, ok: bool, model: str
) -> None:
    from chatterbox_serve.engines.base import VoicePrompt

    s = _settings(CHATTERBOX_MODELS="chatterbox-turbo,chatterbox")
    voice = ResolvedVoice("short", VoicePrompt.from_bytes(b"x"), duration_s=seconds)
    speech, job = (
        SpeechRequest(input="Hello.", model=model),
        LongSpeechRequest(input="Hello.", model=model),
    )
    if ok or model == "chatterbox":  # the original models take short voices
        speech.to_order(s, voice, "rid", streaming=False)
        job.to_parameters(s, voice)
        return
    with pytest.raises(InvalidRequestError) as err:
        speech.to_order(s, voice, "rid", streaming=False)
    assert err.value.param == "voice" and err.value.code == "voice_too_short"
    with pytest.raises(InvalidRequestError, match="more than 5 s"):
        job.to_parameters(s, voice)


def test_a_job_records_its_family_and_plans_with_its_cap() -> None:
    s = _settings(CHATTERBOX_MODELS="chatterbox-multilingual,chatterbox-turbo")
    params = LongSpeechRequest(input="x", model="chatterbox-turbo").to_parameters(
        s, ResolvedVoice(name="default", prompt=None)
    )
    assert params.model is TURBO and params.generation.top_k == 1000
    from chatterbox_serve.jobs.records import JobParameters

    assert JobParameters.from_dict(params.to_json_dict()) == params
    assert JobParameters.from_dict({"language": "en", "response_format": "mp3"}).model is None


def test_turbos_token_cap_bounds_the_plan_where_the_operator_allows_more() -> None:
    s = _settings(
        CHATTERBOX_MODELS="chatterbox-multilingual,chatterbox-turbo",
        CHATTERBOX_MAX_NEW_TOKENS="3000",
        VLLM_MAX_MODEL_LEN="4096",
        CHATTERBOX_MAX_AUDIO_S_PER_CHAR="10",
    )
    assert budget_limits(s, TURBO).max_new_tokens == 1001
    assert budget_limits(s, MULTILINGUAL).max_new_tokens == 3000
    assert budget_limits(s).max_new_tokens == 3000  # the default family's
    text = "word " * 100
    assert token_budget(text, "en", s, family=TURBO) == 1001
    assert token_budget(text, "en", s, family=MULTILINGUAL) > 1001


def test_the_spec_agrees_with_turbos_reference() -> None:
    from chatterbox_serve.model.turbo import reference, voice

    assert TURBO.spec.max_new_tokens == reference.MAX_NEW_TOKENS
    assert TURBO.spec.diffusion_steps == reference.N_TIMESTEPS
    assert TURBO.spec.min_voice_s == voice.MIN_REFERENCE_S == 5.0
    sampling = reference.TurboSampling()
    turbo = family_defaults(TURBO)
    assert (sampling.temperature, sampling.top_k, sampling.top_p) == (
        turbo.temperature,
        turbo.top_k,
        turbo.top_p,
    )
    assert sampling.repetition_penalty == turbo.repetition_penalty


@pytest.mark.parametrize("limit", [15, 20, 25, 30, 45])
def test_chunking_never_cuts_a_tag(limit: int) -> None:
    text = "I cannot believe it [laugh] well [sigh] that was something [clear throat] okay. " * 3
    chunks = split_text(text, limit)
    assert all(len(c) <= limit for c in chunks)
    joined = " ".join(chunks)
    assert joined.count("[clear throat]") == 3 and joined.count("[laugh]") == 3
    for chunk in chunks:
        assert chunk.count("[") == chunk.count("]"), chunk
    s = _settings(CHATTERBOX_MODELS="chatterbox-turbo", MAX_CHUNK_LENGTH="25")
    planned = plan_chunks(text, "en", s, family=TURBO)
    assert sum(c.count("[clear throat]") for c in planned) == 3


def test_every_tag_is_one_bracketed_word_group() -> None:
    assert len(set(PARALINGUISTIC_TAGS)) == len(PARALINGUISTIC_TAGS) == 9
    assert all(t.startswith("[") and t.endswith("]") for t in PARALINGUISTIC_TAGS)


def test_auto_looks_for_the_default_familys_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from chatterbox_serve.engines.auto import _checkpoint_reason

    turbo = _settings(CHATTERBOX_MODELS="chatterbox-turbo")
    assert "CHATTERBOX_TURBO_MODEL_DIR is unset" in str(_checkpoint_reason(turbo))
    empty = _settings(
        CHATTERBOX_MODELS="chatterbox-turbo", CHATTERBOX_TURBO_MODEL_DIR=str(tmp_path)
    )
    assert "t3_turbo_v1.safetensors" in str(_checkpoint_reason(empty))
    for name in (
        "t3_turbo_v1.safetensors",
        "s3gen_meanflow.safetensors",
        "ve.safetensors",
        "conds.pt",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
    ):
        (tmp_path / name).write_bytes(b"")
    assert _checkpoint_reason(empty) is None


def test_a_turbo_chunk_and_its_375_prompt_tokens_fit_the_context() -> None:
    """Turbo's prompt is 377 rows besides the text (speaker, 375 speech tokens, start),
    not the original's 36: budgets left for speech must leave room for them."""
    from chatterbox_serve.model.turbo.config import TurboConfig
    from chatterbox_serve.text.speech_rates import text_tokens

    s = _settings(CHATTERBOX_MODELS="chatterbox-turbo", VLLM_MAX_MODEL_LEN="1024")
    rows = TurboConfig().speech_cond_prompt_len + 2
    assert budget_limits(s, TURBO).prompt_rows == rows
    text = "This sentence is about as long as the ones people usually write. " * 20
    for chunk in plan_chunks(text, "en", s, family=TURBO):
        budget = token_budget(chunk, "en", s, family=TURBO)
        assert rows + text_tokens(chunk, "en") + budget <= 1024
