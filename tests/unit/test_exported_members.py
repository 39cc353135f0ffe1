import pkgutil
import subprocess
import sys

import chatterbox_serve


def test_all_names_exist_and_are_sorted():
    assert chatterbox_serve.__all__ == sorted(chatterbox_serve.__all__)
    for name in chatterbox_serve.__all__:
        assert hasattr(chatterbox_serve, name), name


# Third-party packages of the `vllm` extra: a module that needs one may fail to import
# here (CI installs no vLLM); any other import error fails the test.
_OPTIONAL = ("vllm", "chatterbox_vllm", "torchaudio", "s3tokenizer", "conformer")

_IMPORT_EVERY_MODULE = f"""
import importlib, json, pkgutil, sys
import chatterbox_serve
imported, skipped = [], []
for info in pkgutil.walk_packages(chatterbox_serve.__path__, "chatterbox_serve."):
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in {_OPTIONAL!r}:
            raise
        skipped.append(info.name)
    else:
        imported.append(info.name)
print(json.dumps({{
    "imported": imported,
    "skipped": skipped,
    "loaded": sorted(m for m in ("ray", "fastapi", "starlette") if m in sys.modules),
}}))
"""


def _run(code: str) -> str:
    # A fresh interpreter, so other tests' imports do not count.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_library_imports_neither_ray_nor_fastapi():
    import json

    result = json.loads(_run(_IMPORT_EVERY_MODULE))
    every = {
        info.name for info in pkgutil.walk_packages(chatterbox_serve.__path__, "chatterbox_serve.")
    }
    assert set(result["imported"]) | set(result["skipped"]) == every
    # Only model code that needs chatterbox-vllm itself, and the vLLM model classes (which
    # subclass vLLM's layers and are loaded only inside vLLM's engine-core process), may be
    # skipped; every other engine, voice, audio and text module imports without the extra.
    vllm_models = {
        "chatterbox_serve.engines.vllm.t3_vllm",
        "chatterbox_serve.engines.vllm.turbo_vllm",
    }
    assert all(
        name.startswith("chatterbox_serve.model.") or name in vllm_models
        for name in result["skipped"]
    )
    assert "chatterbox_serve.engines.vllm.engine" in result["imported"]
    assert result["loaded"] == []


def test_importing_the_package_loads_no_heavy_dependency():
    code = (
        "import chatterbox_serve, sys; "
        "print(sorted(m for m in ('ray', 'fastapi', 'torch', 'vllm') if m in sys.modules))"
    )
    assert _run(code) == "[]"


def test_the_library_root_stays_small():
    # One folder per concern: the root holds the cross-cutting modules only.
    from pathlib import Path

    root = Path(chatterbox_serve.__file__).parent
    assert len(list(root.glob("*.py"))) <= 12
