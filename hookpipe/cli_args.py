"""argparse `type=` adapters over hookpipe.values, so options and settings accept the same text.

A value parser raises ValueError saying what it expected; argparse prints an ArgumentTypeError's
message after the option's name and exits 2.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import TypeVar

from hookpipe import values

T = TypeVar("T")


def arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse` as an argparse type: its ValueError becomes a usage error that shows the text."""

    @functools.wraps(parse)
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None

    return convert


positive_int = arg(values.positive_int)
listen_port = arg(values.listen_port)
positive_float = arg(values.positive_float)
positive_duration = arg(values.positive_duration)
