"""Value checks a section declares per field: each returns whether a value is allowed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]
INF = float("inf")


def integer(low: int, high: int | None = None) -> Check:
    return lambda v: (
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    )


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return check


def one_of(options: tuple[str, ...]) -> Check:
    return lambda v: v in options


def optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def optional_str(v: Any) -> bool:
    return v is None or nonempty_str(v)
