"""Command-line values parsed as settings are, with argparse's usage error when they are wrong."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import timedelta

import pytest

from hookpipe import cli_args
from hookpipe.cli import main


def test_good_values_parse() -> None:
    assert cli_args.positive_int("3") == 3
    assert cli_args.positive_float("0.5") == 0.5
    assert cli_args.positive_duration("1h30m") == timedelta(minutes=90)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (cli_args.positive_int, "0", "expected a whole number above 0 (got '0')"),
        (cli_args.positive_int, "two", "expected a whole number (got 'two')"),
        (cli_args.positive_float, "nan", "expected a number above 0 (got 'nan')"),
        (cli_args.positive_duration, "soon", "expected a duration like 90s"),
        (cli_args.positive_duration, "0s", "expected a duration above 0 (got '0s')"),
    ],
)
def test_a_bad_value_is_a_usage_error_that_shows_it(
    parse: Callable[[str], object], text: str, message: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        parse(text)


def test_the_command_exits_2_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["payments", "list", "--limit", "0"])
    assert exit_info.value.code == 2
    assert "--limit: expected a whole number above 0 (got '0')" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["ingress", "run"])
def test_a_port_out_of_range_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--port", "70000"])

    assert exited.value.code == 2
    assert "argument --port: expected a port number from 0 to 65535" in capsys.readouterr().err
