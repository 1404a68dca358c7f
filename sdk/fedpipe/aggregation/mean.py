"""The weighted mean of client updates: the combiner every sum-based rule uses, and the
two weightings (example counts, as FedAvg; the weights the server announced)."""

from __future__ import annotations

import numpy as np

from fedpipe.aggregation.layer import (
    Aggregate,
    ClientContext,
    Combiner,
    RoundContext,
    Weighting,
)
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.clients.weights import cap


def weighted_sum(updates: list[ClientUpdate], weights: np.ndarray) -> np.ndarray:
    """sum_i w_i x_i in float64, in the order given (callers sort by client id, so the
    result does not depend on the order shards arrive in)."""
    total = np.zeros(updates[0].vector.size, dtype=np.float64)
    for w, u in zip(weights, updates, strict=True):
        total += w * u.vector
    return total


class Mean(Combiner):
    """The weighted mean (FedAvg, McMahan et al. 2017). It tolerates no Byzantine client:
    one update can move it anywhere. Only a sum is needed, so it works under secure
    aggregation."""

    name = "mean"
    streamable = True

    def combine(
        self, updates: list[ClientUpdate], weighting: Weighting, rnd: RoundContext
    ) -> Aggregate:
        updates = sorted(updates, key=lambda u: u.client_id)
        weights = weighting.weights(updates, rnd)
        return Aggregate(weighted_sum(updates, weights), float(weights.sum()), len(updates))


class ExampleWeighting(Weighting):
    """FedAvg's weights: each client's number of training examples."""

    name = "example_weights"
    streamable = True

    def client_weight(self, ctx: ClientContext) -> float:
        return float(ctx.num_examples)

    def secure_unit(self, max_examples: int) -> int:
        return 1  # example counts are integers already

    def weights(self, updates: list[ClientUpdate], rnd: RoundContext) -> np.ndarray:
        return np.array([u.num_examples for u in updates], dtype=np.float64)


class AnnouncedWeighting(Weighting):
    """The adaptive weights the server announced in the round plan (fedpipe.clients.weights),
    renormalised and capped again over the clients that actually reported."""

    name = "announced_weights"

    def __init__(self, max_client_weight: float) -> None:
        self.max_client_weight = max_client_weight

    def client_weight(self, ctx: ClientContext) -> float:
        if ctx.announced_weight is None:
            raise ValueError(f"client {ctx.client_id}: the round plan announced no weight")
        return ctx.announced_weight

    def weights(self, updates: list[ClientUpdate], rnd: RoundContext) -> np.ndarray:
        announced = np.array([rnd.announced_weights[u.client_id] for u in updates])
        return cap(announced, self.max_client_weight)
