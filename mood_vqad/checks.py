"""argparse `type=` validators for numeric options: a value out of range is a one-line usage error."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

Check = Callable[[str], float]


def _number(value: str, kind: type) -> float:
    """The value parsed as int or float; a finite number or an ArgumentTypeError."""
    try:
        number = kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    return number


def _ranged(kind: type, test: Callable[[float], bool], wanted: str) -> Check:
    """A validator: parse as kind, then require test(value); `wanted` completes 'expected ...'."""

    def check(value: str) -> float:
        number = _number(value, kind)
        if not test(number):
            raise argparse.ArgumentTypeError(f"{value!r}: expected {wanted}")
        return number

    check.__name__ = wanted  # argparse names the type in its own messages
    return check


positive_int = _ranged(int, lambda n: n >= 1, "a whole number >= 1")
non_negative_int = _ranged(int, lambda n: n >= 0, "a whole number >= 0")
positive_float = _ranged(float, lambda x: x > 0, "a number > 0")
non_negative_float = _ranged(float, lambda x: x >= 0, "a number >= 0")
fraction = _ranged(float, lambda x: 0 <= x <= 1, "a fraction in [0, 1]")
holdout_fraction = _ranged(float, lambda x: 0 <= x < 1, "a fraction in [0, 1)")
percentile = _ranged(float, lambda x: 0 < x < 100, "a percentile strictly between 0 and 100")
