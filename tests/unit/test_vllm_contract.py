"""Pins the chatterbox-vllm 0.2.1 API both engines still use (S3Gen, text helpers), read with `ast`.

Importing chatterbox-vllm's T3 module would import vLLM 0.10's interfaces, which
0.26 no longer has, so this reads the installed source instead. Each check names a fact the adapter
(or a test double standing in for it) depends on; an upgrade that changes one of
them fails here rather than on a GPU.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

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
