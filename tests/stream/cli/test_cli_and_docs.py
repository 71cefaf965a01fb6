"""CLI shape, settings, and README staying true to the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.cli import main_parser, run_cli
from stream.runtime.summary import RunSummary
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


SUMMARY_KEYS = {"events", "invalid", "segment_changes", "batches", "stopped_by", "committed", "seconds",
                "events_per_second"}


def test_run_and_replay_print_the_same_json_summary(tmp_path, capsys):
    log = tmp_path / "log.msgpack"
    assert run_cli(["generate", "--out", str(log), "--users", "60", "--events", "3000"]) == 0
    capsys.readouterr()
    assert run_cli(["replay", "--log", str(log), "--segments", "3", "--warmup-users", "20",
                    "--batch-max-events", "1000"]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(got) == SUMMARY_KEYS
    assert (got["events"], got["invalid"], got["batches"], got["stopped_by"], got["committed"]) == (
        3000, 0, 3, "end-of-log", {})
    assert got["segment_changes"] >= 60 and got["events_per_second"] > 0
    # what `segstream run` prints: committed offsets keyed "topic:partition", in partition order
    run = RunSummary(events=5, batches=1, stopped_by="idle", committed={("in", 1): 3, ("in", 0): 2}).as_dict()
    assert set(run) == SUMMARY_KEYS and run["committed"] == {"in:0": 2, "in:1": 3}
    assert list(run["committed"]) == ["in:0", "in:1"] and run["events_per_second"] is None


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
