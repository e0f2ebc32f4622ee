"""Every `fedtiny` command and sub-command answers --help (exit 0, its usage and options), so that no command
needs the source to be understood (issue 20 §2: `--help` everywhere)."""

from __future__ import annotations

import click
import typer
from typer.testing import CliRunner

from fedtiny.cli import cli


def commands() -> list[list[str]]:
    """Every command path: [], ["run"], ["key", "generate"], ..."""
    out: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        out.append(path)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    walk(sub, [*path, name])

    walk(typer.main.get_command(cli), [])
    return out


def test_every_command_has_help() -> None:
    paths = commands()
    assert ["info"] in paths and ["run"] in paths and len(paths) >= 8
    runner = CliRunner()
    for path in paths:
        r = runner.invoke(cli, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        assert "Usage:" in r.output and "--help" in r.output, path
        if path:  # a command says what it does, beyond its usage line
            usage_and_options = r.output.count("\n")
            assert usage_and_options >= 4, (path, r.output)


def test_info_help_names_the_board_option() -> None:
    r = CliRunner().invoke(cli, ["info", "--help"])
    assert r.exit_code == 0
    assert "--board" in r.output and "FT_DEFS" in r.output and "nano33ble" in r.output


def test_every_option_says_what_it_does() -> None:
    root = typer.main.get_command(cli)
    missing = []
    for path in commands():
        cmd: click.Command = root
        for name in path:
            assert isinstance(cmd, click.Group)
            cmd = cmd.commands[name]
        missing += [(path, p.opts) for p in cmd.params if isinstance(p, click.Option) and not p.help]
    assert not missing
