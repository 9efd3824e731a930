"""The `steadydepth` command: help for every subcommand, one-line errors before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steadydepth.cli import build_parser, main

SUBCOMMANDS = ["synth", "ingest", "train", "evaluate", "export", "run", "demo"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: steadydepth " + command in capsys.readouterr().out


def test_parser_lists_the_subcommands():
    help_text = build_parser().format_help()
    for command in SUBCOMMANDS:
        assert command in help_text


def test_invalid_config_value_fails_before_any_work_with_one_line(tmp_path, capsys):
    store_root = tmp_path / "stores"
    code = main(["ingest", str(tmp_path), "--store-root", str(store_root), "--set", "decode.stride=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "decode.stride" in err and err.startswith("error:")
    assert not store_root.exists()  # nothing was started


def test_bad_size_argument_is_rejected(capsys):
    with pytest.raises(SystemExit) as info:
        main(["synth", "out", "--size", "100"])
    assert info.value.code == 2
    assert "HxW" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    cmd = [sys.executable, "-m", "steadydepth.cli", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "synth" in out.stdout and "ingest" in out.stdout
