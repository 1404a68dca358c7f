"""Plain FedAvg over a cohort of any size in the memory of a few models.

The list-based path reads every shard and holds every update before averaging: memory
grows with the cohort (1,000 clients of a 1 MB model hold 1 GB). Weighted FedAvg needs
none of that: shards are read one at a time, each valid update is added into one float64
running sum. The agreement of each update with the aggregate needs the aggregate first:
updates are kept for it while they fit in HELD_MODELS models' worth of memory (a small
cohort is read once); past that they are dropped and a second pass reads the shards again,
one at a time. Memory is the sum, the result, one shard and at most HELD_MODELS updates,
whatever the cohort size.

It applies when nothing downstream needs the updates together: no secure aggregation, no
DP, FedAvg weights (example counts), the `fedavg` aggregator and no norm screening.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedpipe.aggregation import outcome as aggregation
from fedpipe.aggregation import vector_math
from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate, load_shard

HELD_MODELS = 16  # updates kept for the agreement pass before falling back to re-reading


def applies(
    secure_aggregation: bool, dp: bool, client_weighting: str, aggregator: str, screening: str
) -> bool:
    """Whether the round's aggregate is the plain example-weighted mean of valid updates."""
    return (
        not secure_aggregation
        and not dp
        and client_weighting == "fedavg"
        and aggregator == "fedavg"
        and screening == "off"
    )


@dataclasses.dataclass(frozen=True)
class StreamedMean:
    delta: np.ndarray  # the example-weighted mean of the accepted updates, float32
    accepted: list[aggregation.ClientStats]  # in client order, with norms and agreements
    rejected: list[aggregation.Rejection]


class WeightedSum:
    """The running float64 sum of weight x update: what FedAvg's mean needs, O(model)."""

    def __init__(self, size: int) -> None:
        self.total = np.zeros(size, np.float64)
        self.weight = 0.0

    def add(self, vector: np.ndarray, weight: float) -> None:
        self.total += np.float64(weight) * vector
        self.weight += weight

    def mean(self) -> np.ndarray:
        return (self.total / self.weight).astype(wire.WIRE_DTYPE)


def fedavg(
    cohort: list[int], update_paths: list[str | Path], spec: wire.WeightsSpec
) -> StreamedMean:
    """The same mean, rejections and client statistics as reading every shard, screening
    the updates and averaging them with WeightedFedAvg (shards hold consecutive slices of
    the cohort, so the sum runs in client order as WeightedFedAvg's does)."""
    members = set(cohort)
    seen: set[int] = set()
    problems: list[str] = []
    rejected: list[aggregation.Rejection] = []
    accepted: dict[int, ClientUpdate] = {}  # metadata only: vectors are dropped after use
    norms: dict[int, float] = {}
    running = WeightedSum(spec.size)
    held: dict[int, np.ndarray] | None = {}  # None once the cohort outgrew HELD_MODELS
    for u in _updates(update_paths, problems):
        if u.client_id not in members:
            rejected.append(aggregation.Rejection(u.client_id, "not in this round's cohort"))
            continue
        if u.client_id in seen:
            rejected.append(aggregation.Rejection(u.client_id, "sent more than one update"))
            continue
        seen.add(u.client_id)
        valid, refused = aggregation.screen([u], spec)
        rejected += refused
        if valid:
            running.add(u.vector, u.num_examples)
            norms[u.client_id] = vector_math.l2_norm(u.vector)
            accepted[u.client_id] = dataclasses.replace(u, vector=np.empty(0, wire.WIRE_DTYPE))
            if held is not None:
                held[u.client_id] = u.vector
                if len(held) > HELD_MODELS:
                    held = None
    reason = "no update received" + (f" ({'; '.join(problems)})" if problems else "")
    rejected += [aggregation.Rejection(c, reason) for c in cohort if c not in seen]
    if not accepted:
        return StreamedMean(np.zeros(spec.size, wire.WIRE_DTYPE), [], rejected)
    delta = running.mean()
    agreement = _agreements(update_paths, accepted, norms, delta, held)
    stats = [
        aggregation.ClientStats(
            c, u.num_examples, u.train_loss, u.duration_s, norms[c], agreement[c]
        )
        for c, u in accepted.items()
    ]
    return StreamedMean(delta, stats, rejected)


def _updates(update_paths: list[str | Path], problems: list[str]) -> Iterator[ClientUpdate]:
    """Every update of every readable shard, one shard in memory at a time."""
    for path in update_paths:
        try:
            shard = load_shard(path)
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{Path(path).name}: {e}")
            continue
        yield from shard


def _agreements(
    update_paths: list[str | Path],
    accepted: dict[int, ClientUpdate],
    norms: dict[int, float],
    delta: np.ndarray,
    held: dict[int, np.ndarray] | None,
) -> dict[int, float]:
    """The cosine of each accepted update with the aggregate, from the held updates or, for
    a large cohort, a second pass over the shards (the first update of each accepted client
    being the one that was summed)."""
    if held is not None:
        return {c: vector_math.cosine(v, delta, norms[c]) for c, v in held.items()}
    out: dict[int, float] = {}
    for u in _updates(update_paths, []):
        if u.client_id in accepted and u.client_id not in out:
            out[u.client_id] = vector_math.cosine(u.vector, delta, norms[u.client_id])
    return out
