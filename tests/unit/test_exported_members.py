import sys

import chatterbox_serve


def test_all_names_exist_and_are_sorted():
    assert chatterbox_serve.__all__ == sorted(chatterbox_serve.__all__)
    for name in chatterbox_serve.__all__:
        assert hasattr(chatterbox_serve, name), name


def test_library_imports_neither_ray_nor_fastapi():
    # Run in a fresh interpreter so other tests' imports do not count.
    import subprocess

    code = (
        "import chatterbox_serve, sys; "
        "print(sorted(m for m in ('ray', 'fastapi', 'torch', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
