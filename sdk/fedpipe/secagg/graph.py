"""Who shares keys and masks with whom: everyone (SecAgg, Bonawitz et al. 2017) or the k
neighbours of a random k-regular graph (SecAgg+, Bell et al. 2020), which cuts the cost
from O(n) to O(k) per client with k of order log n.
"""

from __future__ import annotations

import math

import numpy as np

_GRAPH_TAG = 0x5EC6A4


def default_neighbours(cohort_size: int) -> int:
    """k for SecAgg+: 2 ceil(log2 n) (Bell et al. need k of order log n), below n."""
    k = 2 * math.ceil(math.log2(max(cohort_size, 2)))
    return min(k, cohort_size - 1)


def complete(clients: list[int]) -> dict[int, tuple[int, ...]]:
    return {c: tuple(sorted(set(clients) - {c})) for c in clients}


def random_regular(
    clients: list[int], k: int, seed: int, round_number: int
) -> dict[int, tuple[int, ...]]:
    """A Harary graph H(k, n) (each node joined to its k/2 nearest on each side of a ring,
    plus the opposite node when k is odd) over a random order of the clients: every client
    has k neighbours (one has k + 1 when k and n are both odd), and the order is a
    function of the run seed and the round."""
    n = len(clients)
    if k >= n - 1:
        return complete(clients)
    order = [
        clients[i] for i in np.random.default_rng([seed, round_number, _GRAPH_TAG]).permutation(n)
    ]
    edges: dict[int, set[int]] = {c: set() for c in clients}
    offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
    for i, c in enumerate(order):
        for d in offsets:
            other = order[(i + d) % n]
            edges[c].add(other)
            edges[other].add(c)
    return {c: tuple(sorted(e)) for c, e in edges.items()}
