"""How many Byzantine (faulty or hostile) clients each aggregator tolerates.

One rule per aggregator, checked twice: by the config against `cohort_size` before
anything runs, and by the aggregator against the number of updates actually left after
validation and screening, since dropouts can shrink a cohort below what a rule needs.
"""

from __future__ import annotations

import math


def trimmed_per_side(trim_fraction: float, updates: int) -> int:
    """Values the trimmed mean drops at each end of every coordinate."""
    return math.floor(trim_fraction * updates + 1e-9)


def violation(
    aggregator: str,
    updates: int,
    byzantine_clients: int,
    *,
    trim_fraction: float,
    multi_krum_m: int | None,
) -> str | None:
    """The rule `aggregator` breaks with `updates` updates of which `byzantine_clients` may
    be hostile, or None if its assumptions hold."""
    n, f = updates, byzantine_clients
    if aggregator == "fedavg" and f > 0:
        return "fedavg tolerates no Byzantine clients (byzantine_clients must be 0)"
    if aggregator == "median" and n < 2 * f + 1:
        return f"median needs n >= 2f + 1 updates: n = {n}, f = {f}"
    if aggregator == "trimmed_mean" and trimmed_per_side(trim_fraction, n) < f:
        return (
            f"trimmed_mean drops floor(trim_fraction x n) = "
            f"{trimmed_per_side(trim_fraction, n)} values per side, fewer than f = {f} "
            f"(n = {n}, trim_fraction = {trim_fraction})"
        )
    if aggregator in ("krum", "multi_krum") and n < 2 * f + 3:
        return f"{aggregator} needs n >= 2f + 3 updates: n = {n}, f = {f}"
    if aggregator == "multi_krum" and multi_krum_m is not None and multi_krum_m > n - f:
        return f"multi_krum averages m <= n - f updates: m = {multi_krum_m}, n - f = {n - f}"
    return None
