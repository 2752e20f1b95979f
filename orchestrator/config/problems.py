"""What is wrong with a config, collected: every invalid value with its key, the value and what is valid.

Each config dataclass in schema.py says what is wrong with itself through one of these; the rules
between sections are in rules.py. Nothing is raised here: a user fixes every problem in one go.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence


def is_number(value: Any) -> bool:
    """A finite int or float, and not a bool (YAML's `true` is an int to Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def show(value: Any) -> str:
    """A value as the user would type it in an override (None as null)."""
    return "null" if value is None else str(value)


class Problems:
    """Collects every invalid value of a config."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def require(self, ok: bool, key: str, value: Any, valid: str) -> None:
        """Unless `ok`: `key=value is not valid: <valid>`."""
        if not ok:
            self.messages.append(f"{key}={show(value)} is not valid: {valid}")

    def choice(self, key: str, value: Any, choices: Sequence[str]) -> None:
        """`value` must be one of `choices`."""
        self.require(value in choices, key, value, f"use one of {', '.join(choices)}")

    def at_least(self, key: str, value: Any, minimum: float) -> None:
        """A number >= `minimum`."""
        self.require(is_number(value) and value >= minimum, key, value, f"must be a number >= {minimum:g}")

    def positive(self, key: str, value: Any) -> None:
        """A number > 0."""
        self.require(is_number(value) and value > 0, key, value, "must be a number > 0")

    def fraction(self, key: str, value: Any, upper_inclusive: bool = False) -> None:
        """A number in [0, 1), or [0, 1] with `upper_inclusive`."""
        ok = is_number(value) and 0 <= value and (value <= 1 if upper_inclusive else value < 1)
        self.require(ok, key, value, f"must be in [0, 1{']' if upper_inclusive else ')'}")

    def sizes(self, key: str, values: Iterable[Any]) -> None:
        """A non-empty list of integers >= 1 (layer widths, channels, shapes)."""
        listed = list(values)
        ok = bool(listed) and all(isinstance(v, int) and v >= 1 for v in listed)
        self.require(ok, key, listed, "must be a non-empty list of integers >= 1")
