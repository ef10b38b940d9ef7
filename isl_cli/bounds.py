"""The range every numeric option accepts, and the one check (and one-line message) that enforces it.

A `Bounds` is declared once with its option: beside each config field (`config.option(..., bounds=...)`) or
beside a command's own option (`--threads`, `--round`, `--seed`, ...). Values outside it are refused before any
work with one line that names the option, the range and the value; NaN and inf are never inside a range. The
upper ends keep every size small enough to reach the memory checks (and far from int64 overflow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from isl_cli.errors import IslError


@dataclass(frozen=True)
class Bounds:
    """An interval of accepted values: [low, high], either end open (excluded) when said so.

    `integer` ranges say "an integer"; a float range accepts ints too (typed `--lr 1`).
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        """`positive and at most 1024`, `positive (an integer up to 4096)`, `an integer from 0 to 1000`,
        `at least 0 and below 1`."""
        high = f"{'below' if self.high_open else 'at most'} {_number(self.high)}"
        if self.integer:
            if self.low == 1:
                return f"positive (an integer up to {_number(self.high)})"
            return f"an integer from {_number(self.low)} to {_number(self.high)}"
        if self.low == 0 and self.low_open:
            return f"positive and {high}"
        return f"{'above' if self.low_open else 'at least'} {_number(self.low)} and {high}"

    def check(self, option: str, value: Any) -> None:
        """IslError naming `option` unless `value` lies in the range (None means "not given")."""
        if value is None or self.contains(value):
            return
        raise IslError(f"{option} must be {self.describe()}, got {_number(value)}")

    def check_all(self, option: str, values: Iterable[Any] | None) -> None:
        """`check` every value of a repeatable option."""
        for value in values or ():
            self.check(option, value)


def _number(value: Any) -> str:
    """Numbers as typed: 65536, 1e+30, 0.0001, nan (no float noise); anything else as is."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return f"{value:g}"
    return str(value)
