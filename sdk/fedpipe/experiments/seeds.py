"""Repeating an experiment over run seeds: the seed list the commands take, and the mean ±
spread their tables report, so every experiment states its spread the same way.

The spread is the sample standard deviation over the seeds (n - 1 in the denominator),
0 for a single seed.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def parse(raw: str) -> list[int]:
    """A comma-separated list of distinct integer seeds, e.g. "0,1,2"."""
    try:
        seeds = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError as e:
        raise ValueError(f"{raw!r}: expected comma-separated integers") from e
    if not seeds:
        raise ValueError("expected at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{raw!r}: a seed is repeated")
    return seeds


@dataclasses.dataclass(frozen=True)
class Spread:
    """One figure over the seeds: its mean, sample standard deviation and range."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    def format(self, digits: int = 3) -> str:
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def spread(values: Iterable[float]) -> Spread:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarise")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Spread(statistics.fmean(values), std, min(values), max(values), len(values))


def mean_std(values: Iterable[float], digits: int = 3) -> str:
    """ "mean ± std" over the seeds (just the value for one seed)."""
    return spread(values).format(digits)


def group(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items grouped by a key (a setting), in first-seen order: one list per setting,
    holding its per-seed results."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
