"""CLI shape, settings, and README staying true to the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import main_parser, run_cli
from stream.settings import Settings, SettingsError

README = Path(__file__).resolve().parents[3] / "README.md"


def test_settings_from_env_and_flags_precedence(monkeypatch, capsys):
    monkeypatch.setenv("SEGSTREAM_SEGMENTS", "12")
    monkeypatch.setenv("SEGSTREAM_INPUT_TOPIC", "clicks")
    assert run_cli(["config", "--input-topic", "views"]) == 0
    out = capsys.readouterr().out
    assert '"segments": 12' in out and '"input_topic": "views"' in out
    assert "password" not in out


def test_bad_settings_are_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("SEGSTREAM_SEGMENTS", "0")
    assert run_cli(["config"]) == 2
    assert "SEGSTREAM_SEGMENTS must be > 0" in capsys.readouterr().err
    with pytest.raises(SettingsError):
        Settings(hysteresis=1.5)


def test_every_setting_is_a_flag_of_run():
    run = main_parser()._subparsers._group_actions[0].choices["run"]
    flags = {opt for a in run._actions for opt in a.option_strings}
    for name in Settings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in flags


def test_readme_quick_start_commands_exist():
    text = README.read_text()
    assert "./dev demo" in text and "./dev test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev test" in ci


def _commands(parser) -> list[list[str]]:
    """Every command path of the CLI, nested sub-commands included (``evaluate movielens`` ...)."""
    import argparse

    found: list[list[str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append([name])
                found.extend([name, *rest] for rest in _commands(sub))
    return found


@pytest.mark.parametrize("command", [[]] + _commands(main_parser()), ids=lambda c: " ".join(c) or "segstream")
def test_every_command_has_working_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: segstream")
