"""The README stays true: every setting documented, and CI runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

from chatterbox_serve.config import env_names

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block, "README must open with a bash block"
    return [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]


def test_every_setting_is_in_the_configuration_table():
    missing = [name for name in env_names() if f"`{name}`" not in README]
    assert missing == []


def test_readme_opens_with_run_and_test_commands():
    run, test = _commands()
    assert "serve run serve_config.yaml" in run
    assert "pytest" in test and ".[test]" in test


def test_ci_runs_exactly_the_readme_test_command():
    _, test = _commands()
    ci = (ROOT / ".ci/run").read_text()
    steps = [s.strip() for s in test.split("&&")]
    ci_lines = [
        line.strip()
        for line in ci.splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci_lines == steps


def _file_map() -> list[str]:
    """The paths the README's file map names: each line's first word, under its parent."""
    section = README.split("### Where things are", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "the file map is a code block under 'Where things are'"
    paths: list[str] = []
    parent = ""
    for line in block.group(1).splitlines():
        if not line.strip() or line.startswith("   " + " " * 20):
            continue  # a description's continuation line
        name = line.split()[0]
        if line.startswith("  "):
            paths.append(parent + name)
        else:
            parent = name
            paths.append(name)
    return paths


def test_the_file_map_names_only_files_that_exist():
    missing = [p for p in _file_map() if not (ROOT / p).exists()]
    assert missing == []


def test_the_file_map_names_every_top_level_module_and_package():
    named = set(_file_map())
    unnamed = []
    for package in ("chatterbox_serve", "deployments"):
        for entry in sorted((ROOT / package).iterdir()):
            if entry.name.startswith(("_", ".")) or entry.name == "py.typed":
                continue
            path = f"{package}/{entry.name}" + ("/" if entry.is_dir() else "")
            if (entry.is_dir() or entry.suffix == ".py") and path not in named:
                unnamed.append(path)
    assert unnamed == []
