"""Byzantine-robust aggregators: combine client deltas so that a few bad ones cannot
drag the global model anywhere they like.

Each one states how many Byzantine clients f it tolerates (fedpipe.aggregation.byzantine_tolerance)
and refuses, naming the rule, a set of updates too small for that guarantee.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from fedpipe.aggregation import byzantine_tolerance
from fedpipe.aggregation.clipping import clip_to_norm
from fedpipe.aggregation.layer import (
    Aggregate,
    ClientContext,
    Combiner,
    Layer,
    RoundContext,
    Screened,
    Weighting,
)
from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate

if TYPE_CHECKING:
    from fedpipe.config import RunConfig


class TooFewUpdatesForTolerance(RuntimeError):
    """The valid updates of a round are too few for the aggregator's Byzantine guarantee:
    the round fails and the previous global model stands."""


def _stack(updates: list[ClientUpdate]) -> np.ndarray:
    """Updates as rows of a float64 matrix, in client order (arrival order must not matter)."""
    ordered = sorted(updates, key=lambda u: u.client_id)
    return np.stack([u.vector.astype(np.float64) for u in ordered])


class _RobustRule(Combiner):
    """A rule over individual updates, checked against the updates it is actually given.
    It ignores client weights: a robust statistic weighs every client alike."""

    needs_individual_updates = True

    name: str
    byzantine_clients: int = 0
    trim_fraction: float = 0.0
    multi_krum_m: int | None = None

    def check(self, updates: list[ClientUpdate]) -> None:
        broken = byzantine_tolerance.violation(
            self.name,
            len(updates),
            self.byzantine_clients,
            trim_fraction=self.trim_fraction,
            multi_krum_m=self.multi_krum_m,
        )
        if broken:
            raise TooFewUpdatesForTolerance(
                f"{len(updates)} valid updates are too few for aggregation rule {self.name} "
                f"with byzantine_clients = {self.byzantine_clients}: {broken}"
            )

    def combine(
        self, updates: list[ClientUpdate], weighting: Weighting, rnd: RoundContext
    ) -> Aggregate:
        return Aggregate(self.aggregate(updates).astype(np.float64), 1.0, len(updates))

    def aggregate(self, updates: list[ClientUpdate]) -> np.ndarray:
        """The rule's result as a wire vector, after checking its guarantee holds."""
        self.check(updates)
        return self.statistic(updates).astype(wire.WIRE_DTYPE)

    def statistic(self, updates: list[ClientUpdate]) -> np.ndarray:
        raise NotImplementedError


class CoordinateMedian(_RobustRule):
    """Coordinate-wise median (Yin et al. 2018): tolerates f < n/2 arbitrary updates,
    because each coordinate's median lies between two honest values."""

    name = "median"

    def __init__(self, byzantine_clients: int = 0) -> None:
        self.byzantine_clients = byzantine_clients

    def statistic(self, updates: list[ClientUpdate]) -> np.ndarray:
        return np.median(_stack(updates), axis=0)


class TrimmedMean(_RobustRule):
    """Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the
    floor(trim_fraction x n) largest and smallest values and average the rest; tolerates
    f <= floor(trim_fraction x n)."""

    name = "trimmed_mean"

    def __init__(self, trim_fraction: float, byzantine_clients: int = 0) -> None:
        self.trim_fraction, self.byzantine_clients = trim_fraction, byzantine_clients

    def statistic(self, updates: list[ClientUpdate]) -> np.ndarray:
        k = byzantine_tolerance.trimmed_per_side(self.trim_fraction, len(updates))
        ordered = np.sort(_stack(updates), axis=0)
        return ordered[k : len(updates) - k].mean(axis=0)


def krum_scores(matrix: np.ndarray, byzantine_clients: int) -> np.ndarray:
    """Krum score of each row: the sum of squared distances to its n - f - 2 nearest other
    rows (Blanchard et al. 2017). Honest updates cluster, so theirs are small."""
    squared = np.square(matrix).sum(axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * matrix @ matrix.T, 0.0)
    np.fill_diagonal(distances, np.inf)
    neighbours = max(1, len(matrix) - byzantine_clients - 2)
    return np.sort(distances, axis=1)[:, :neighbours].sum(axis=1)


class MultiKrum(_RobustRule):
    """Multi-Krum (Blanchard et al. 2017): average the m updates with the lowest Krum
    scores (m = n - f by default); tolerates f with n >= 2f + 3. Krum is m = 1."""

    name = "multi_krum"

    def __init__(self, byzantine_clients: int = 0, multi_krum_m: int | None = None) -> None:
        self.byzantine_clients, self.multi_krum_m = byzantine_clients, multi_krum_m

    def chosen(self, updates: list[ClientUpdate]) -> list[int]:
        """Client ids of the updates Krum keeps, best score first."""
        self.check(updates)
        ordered = sorted(updates, key=lambda u: u.client_id)
        m = self.multi_krum_m or len(updates) - self.byzantine_clients
        # A stable sort breaks score ties by client id, so the choice is reproducible.
        best = np.argsort(krum_scores(_stack(ordered), self.byzantine_clients), kind="stable")
        return [ordered[i].client_id for i in best[:m]]

    def statistic(self, updates: list[ClientUpdate]) -> np.ndarray:
        keep = set(self.chosen(updates))
        return _stack([u for u in updates if u.client_id in keep]).mean(axis=0)


class Krum(MultiKrum):
    """Krum (Blanchard et al. 2017): the single update closest to its n - f - 2 nearest
    neighbours; tolerates f with n >= 2f + 3."""

    name = "krum"

    def __init__(self, byzantine_clients: int = 0) -> None:
        super().__init__(byzantine_clients, multi_krum_m=1)


class NormBounding(Layer):
    """Clip every update to L2 norm `norm_bound` before the mean (Sun et al. 2019). It
    removes no one: each client moves the model by at most its weight share x norm_bound,
    so f attackers are bounded, not excluded. Only a sum is needed after clipping, so it
    also works under secure aggregation, where the clients clip (an honest client does;
    docs/secure_aggregation.md says what a dishonest one can do)."""

    name = "norm_bounding"
    streamable = True

    def __init__(self, norm_bound: float) -> None:
        self.norm_bound = norm_bound

    def client(self, delta: np.ndarray, ctx: ClientContext) -> np.ndarray:
        return clip_to_norm(delta, self.norm_bound) if ctx.secure else delta

    def on_updates(self, updates: list[ClientUpdate], rnd: RoundContext) -> Screened:
        return Screened(
            [
                dataclasses.replace(u, vector=clip_to_norm(u.vector, self.norm_bound))
                for u in updates
            ]
        )


RULES: dict[str, Callable[[RunConfig], _RobustRule]] = {
    "median": lambda c: CoordinateMedian(c.aggregation.byzantine_clients),
    "trimmed_mean": lambda c: TrimmedMean(
        c.aggregation.trim_fraction, c.aggregation.byzantine_clients
    ),
    "krum": lambda c: Krum(c.aggregation.byzantine_clients),
    "multi_krum": lambda c: MultiKrum(c.aggregation.byzantine_clients, c.aggregation.multi_krum_m),
}
