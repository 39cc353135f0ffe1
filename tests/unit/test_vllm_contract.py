"""Pins the chatterbox-vllm 0.2.1 API the vLLM engine relies on, read with `ast`.

Importing chatterbox-vllm's model code would import vLLM, which CI cannot install,
so this reads the installed source instead. Each check names a fact the adapter
(or a test double standing in for it) depends on; an upgrade that changes one of
them fails here rather than on a GPU.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

from chatterbox_serve.engines.vllm.engine import PROMPT_OVERHEAD, SPEECH_VOCAB_SIZE
from chatterbox_serve.engines.vllm.loading import ENGLISH, MULTILINGUAL
from chatterbox_serve.text.languages import SUPPORTED_LANGUAGES


def _package() -> Path:
    spec = importlib.util.find_spec("chatterbox_vllm")
    assert spec is not None and spec.submodule_search_locations, "pip install chatterbox-vllm"
    return Path(next(iter(spec.submodule_search_locations)))


def _tree(relative: str) -> ast.Module:
    return ast.parse((_package() / relative).read_text(encoding="utf-8"))


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef:
    return next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _params(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]]


def _constants(tree: ast.Module) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


@pytest.fixture(scope="module")
def tts() -> ast.ClassDef:
    return _class(_tree("tts.py"), "ChatterboxTTS")


def test_installed_version_is_the_pinned_one() -> None:
    assert importlib.metadata.version("chatterbox-vllm") == "0.2.1"


def test_from_local_takes_our_arguments_and_passes_the_rest_to_llm(tts: ast.ClassDef) -> None:
    fn = _method(tts, "from_local")
    assert any(isinstance(d, ast.Name) and d.id == "classmethod" for d in fn.decorator_list)
    params = _params(fn)
    for name in ("ckpt_dir", "target_device", "max_model_len", "compile", "max_batch_size"):
        assert name in params
    assert {"variant", "s3gen_use_fp16"} <= set(params) and fn.args.kwarg is not None
    # `LLM(**{**base_vllm_kwargs, **kwargs})`: our kwargs win over its defaults.
    llm_call = next(
        n
        for n in ast.walk(fn)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "LLM"
    )
    merged = llm_call.keywords[0].value
    assert isinstance(merged, ast.Dict) and [ast.unparse(v) for v in merged.values] == [
        "base_vllm_kwargs",
        "kwargs",
    ]
    base = next(
        n.value
        for n in ast.walk(fn)
        if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "base_vllm_kwargs"
    )
    assert isinstance(base, ast.Dict)
    keys = {k.value for k in base.keys if isinstance(k, ast.Constant)}
    assert {"model", "tokenizer", "gpu_memory_utilization", "max_model_len"} <= keys
    # The variant names and weight files our loader validates.
    source = ast.unparse(fn)
    for variant in (ENGLISH, MULTILINGUAL):
        assert repr(variant.t3_weights) in source
    for name in ("ve.safetensors", "s3gen.safetensors", "conds.pt"):
        assert repr(name) in source
    assert "variant == 'english'" in source


def test_hub_revisions_match_its_pins(tts: ast.ClassDef) -> None:
    for method, variant in (
        ("from_pretrained", ENGLISH),
        ("from_pretrained_multilingual", MULTILINGUAL),
    ):
        fn = _method(tts, method)
        defaults = [d.value for d in fn.args.defaults if isinstance(d, ast.Constant)]
        assert variant.revision in defaults
        listed = {c.value for c in ast.walk(fn) if isinstance(c, ast.Constant)}
        assert set(variant.files) <= listed


def test_conditionals_api(tts: ast.ClassDef) -> None:
    fn = _method(tts, "get_audio_conditionals")
    # An lru_cache keyed by path: we call the function beneath it via `__wrapped__`.
    assert any("lru_cache" in ast.unparse(d) for d in fn.decorator_list)
    assert _params(fn) == ["self", "wav_fpath"]
    returns = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
    assert [ast.unparse(r.value) for r in returns if r.value] == ["(s3gen_ref_dict, cond_emb)"]
    exaggeration = _method(tts, "update_exaggeration")
    assert _params(exaggeration) == ["self", "cond_emb", "exaggeration"]
    body = ast.unparse(exaggeration)
    assert "new_cond_emb[-1] = self.t3_cond_enc.emotion_adv_fc(" in body


def test_emotion_row_is_a_bias_free_linear_of_one_input() -> None:
    enc = _class(_tree("models/t3/modules/cond_enc.py"), "T3CondEnc")
    source = ast.unparse(enc)
    # So the last conditioning row is exaggeration * emotion_adv_fc.weight[:, 0].
    assert "self.emotion_adv_fc = nn.Linear(1, hp.n_channels, bias=False)" in source
    assert "cond_emotion_adv" in source.split("torch.cat(")[-1]


def test_attributes_the_engine_reads(tts: ast.ClassDef) -> None:
    init = ast.unparse(_method(tts, "__init__"))
    for attr in ("t3", "t3_config", "t3_cond_enc", "s3gen", "target_device", "max_model_len"):
        assert f"self.{attr} = {attr}" in init
    assert _params(_method(tts, "shutdown")) == ["self"]
    config = _constants(_tree("models/t3/modules/t3_config.py"))
    assert config["stop_speech_token"] == SPEECH_VOCAB_SIZE + 1
    assert config["start_speech_token"] == SPEECH_VOCAB_SIZE


def test_t3_model_facts() -> None:
    tree = _tree("models/t3/t3.py")
    constants = _constants(tree)
    assert constants["SPEECH_TOKEN_OFFSET"] == 2500
    assert constants["CONDITIONING_SIZE"] + 1 == PROMPT_OVERHEAD
    source = ast.unparse(tree)
    # The text vocabulary size follows the tokenizer name; we keep its names.
    assert "704 if self.cfg.tokenizer == 'EnTokenizer' else 2454" in source
    assert "os.environ.get('CHATTERBOX_CFG_SCALE', '0.5')" in source
    # Token-id prompts reach the processor, which reads the conditionals from mm_data.
    apply = _method(_class(tree, "T3MultiModalProcessor"), "apply")
    assert ast.unparse(apply.args.args[1].annotation) == "Union[str, list[int]]"
    assert "mm_data.get('conditionals', None)" in ast.unparse(apply)
    registry = ast.unparse(_tree("models/t3/__init__.py"))
    assert "SPEECH_TOKEN_OFFSET" in registry
    assert "'EnTokenizer'" in registry and "'MtlTokenizer'" in registry


def test_s3gen_inference_signature() -> None:
    s3gen = _class(_tree("models/s3gen/s3gen.py"), "S3Token2Wav")
    params = _params(_method(s3gen, "inference"))
    assert params[:2] == ["self", "speech_tokens"]
    assert {"ref_dict", "n_timesteps"} <= set(params)
    assert "S3Token2Wav as S3Gen" in ast.unparse(_tree("models/s3gen/__init__.py"))


def test_text_helpers() -> None:
    tree = _tree("text_utils.py")
    assert any(isinstance(n, ast.FunctionDef) and n.name == "punc_norm" for n in tree.body)
    languages = next(
        n.value
        for n in tree.body
        if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "SUPPORTED_LANGUAGES"
    )
    assert ast.literal_eval(languages) == SUPPORTED_LANGUAGES
    for vocab in ("models/t3/tokenizer.json", "models/t3/grapheme_mtl_merged_expanded_v1.json"):
        assert (_package() / vocab).is_file()
