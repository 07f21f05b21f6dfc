"""First contact: `rig --version`, and `--help` of every command describes each argument, its
default, and shows an example."""

from __future__ import annotations

import argparse

import pytest
from conftest import run_rig

import rig


def _commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """Every command and sub-command of `rig`, with its parser (the top level included)."""
    from rig.cli import build_parser

    out: list[tuple[list[str], argparse.ArgumentParser]] = []

    def walk(path: list[str], parser: argparse.ArgumentParser) -> None:
        out.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk([*path, name], child)

    walk([], build_parser())
    return out


def test_version_prints_the_package_version() -> None:
    result = run_rig("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"rig {rig.__version__}", result.stdout + result.stderr


def test_every_command_is_covered() -> None:
    names = {" ".join(path) for path, _ in _commands()}
    assert {"", "run", "status", "export", "calibrate intrinsics", "calibrate range", "jog", "doctor",
            "firmware flash"} <= names


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in _commands()])
def test_help_describes_every_argument_with_its_default_and_an_example(path: str) -> None:
    parser = dict((" ".join(p), parser) for p, parser in _commands())[path]
    result = run_rig(*path.split(), "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines anywhere
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help and " ".join(action.help.split()) in text, f"rig {path}: {name} is not described"
        if action.option_strings and action.default is not None and not action.required:
            assert f"(default: {action.default})" in text, f"rig {path}: {name} does not show its default"
    example = result.stdout.split("example:", 1)
    assert len(example) == 2, f"rig {path} --help shows no example:\n{result.stdout}"
    assert f"rig {path}".strip() in example[1], f"rig {path} --help: the example does not use the command"
