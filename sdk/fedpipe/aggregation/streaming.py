"""Plain FedAvg over a cohort of any size in the memory of a few models.

The list-based path reads every shard and holds every update before averaging: memory
grows with the cohort (1,000 clients of a 1 MB model hold 1 GB). Weighted FedAvg needs
none of that: shards are read one at a time, each valid update is added into one float64
running sum. The agreement of each update with the aggregate needs the aggregate first:
updates are kept for it while they fit in HELD_MODELS models' worth of memory (a small
cohort is read once); past that they are dropped and a second pass reads the shards again,
one at a time. Memory is the sum, the result, one shard and at most HELD_MODELS updates,
whatever the cohort size.

It applies when every part of the chain looks at one update at a time
(`AggregationChain.streams`: validation, norm bounding, example weights and the mean; no
secure aggregation, DP, screening or robust rule).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedpipe.aggregation import vector_math
from fedpipe.aggregation.layer import Aggregate, RoundContext
from fedpipe.aggregation.outcome import ClientStats, Rejection
from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate, ShardUnreadable, load_shard

if TYPE_CHECKING:
    from fedpipe.aggregation.chain import AggregationChain

HELD_MODELS = 16  # updates kept for the agreement pass before falling back to re-reading


@dataclasses.dataclass(frozen=True)
class StreamedSum:
    aggregate: Aggregate  # the weighted sum of the kept updates and its total weight
    accepted: list[ClientStats]  # in client order, with norms and agreements
    rejected: list[Rejection]


def weighted_sum(
    chain: AggregationChain, update_paths: list[str | Path], rnd: RoundContext
) -> StreamedSum:
    """The same sum, rejections and client statistics as reading every shard and running
    the chain's screen and combine over the list (shards hold consecutive slices of the
    cohort, so the sum runs in client order as the mean's does)."""
    cohort = rnd.cohort
    members = set(cohort)
    seen: set[int] = set()
    problems: list[str] = []
    rejected: list[Rejection] = []
    accepted: dict[int, ClientUpdate] = {}  # metadata only: vectors are dropped after use
    norms: dict[int, float] = {}
    total, weight = np.zeros(rnd.spec.size, np.float64), 0.0
    held: dict[int, np.ndarray] | None = {}  # None once the cohort outgrew HELD_MODELS
    for u in _updates(update_paths, problems):
        if u.client_id not in members:
            rejected.append(Rejection(u.client_id, "not in this round's cohort"))
            continue
        if u.client_id in seen:
            rejected.append(Rejection(u.client_id, "sent more than one update"))
            continue
        seen.add(u.client_id)
        screened = chain.screen([u], rnd)
        rejected += screened.rejected
        for u in screened.kept:
            (w,) = chain.weighting.weights([u], rnd)
            total += w * u.vector
            weight += w
            norms[u.client_id] = vector_math.l2_norm(u.vector)
            accepted[u.client_id] = dataclasses.replace(u, vector=np.empty(0, wire.WIRE_DTYPE))
            if held is not None:
                held[u.client_id] = u.vector
                if len(held) > HELD_MODELS:
                    held = None
    reason = "no update received" + (f" ({'; '.join(problems)})" if problems else "")
    rejected += [Rejection(c, reason) for c in cohort if c not in seen]
    aggregate = Aggregate(total, weight, len(accepted))
    if not accepted:
        return StreamedSum(aggregate, [], rejected)
    delta = aggregate.delta
    agreement = _agreements(update_paths, accepted, norms, delta, held)
    stats = [
        ClientStats(c, u.num_examples, u.train_loss, u.duration_s, norms[c], agreement[c])
        for c, u in accepted.items()
    ]
    return StreamedSum(aggregate, stats, rejected)


def _updates(update_paths: list[str | Path], problems: list[str]) -> Iterator[ClientUpdate]:
    """Every update of every readable shard, one shard in memory at a time."""
    for path in update_paths:
        try:
            shard = load_shard(path)
        except ShardUnreadable as e:  # load_shard turns every failure into this
            problems.append(str(e))  # it names the shard
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
    delta_norm = vector_math.l2_norm(delta)
    if held is not None:
        return {c: vector_math.cosine(v, delta, norms[c], delta_norm) for c, v in held.items()}
    out: dict[int, float] = {}
    for u in _updates(update_paths, []):
        if u.client_id in accepted and u.client_id not in out:
            norm = norms[u.client_id]
            out[u.client_id] = vector_math.cosine(u.vector, delta, norm, delta_norm)
    return out
