"""The parts a layer of the aggregation chain can have, and what they see.

See fedpipe.aggregation.chain for how the parts run in a round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedpipe.aggregation.outcome import Rejection, ScreeningFlag
from fedpipe.artifacts import wire
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ClientUpdate

State = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class ClientContext:
    """What a client knows when it applies the chain's client part to its update."""

    client_id: int
    round_number: int
    num_examples: int
    announced_weight: float | None  # the weight the server announced in the round plan
    state: Mapping[str, np.ndarray]  # the global model's server state (e.g. the clip norm)
    secure: bool  # the update is masked next: the server cannot apply server parts to it
    state_dir: Path | None = None  # where the client keeps what it carries between rounds

    @classmethod
    def for_update(
        cls, plan: RoundPlan, update: ClientUpdate, *, secure: bool, state_dir: Path | None
    ) -> ClientContext:
        """What a client of the planned round knows about itself once it has trained."""
        announced = dict(zip(plan.cohort.clients, plan.cohort.client_weights, strict=False))
        return cls(
            client_id=update.client_id,
            round_number=plan.cohort.round_number,
            num_examples=update.num_examples,
            announced_weight=announced.get(update.client_id),
            state={},
            secure=secure,
            state_dir=state_dir,
        )


@dataclasses.dataclass(frozen=True)
class RoundContext:
    """What the server knows of the round while aggregating."""

    round_number: int
    cohort: list[int]
    announced_weights: dict[int, float]
    state: State  # the global model's server state before this round
    spec: wire.WeightsSpec
    secure: bool


@dataclasses.dataclass
class Aggregate:
    """The combined update before the server optimizer: `total / divisor` is the delta.

    A mean keeps total and divisor apart, so a later layer can add noise to the sum or
    change the divisor (DP-FedAvg divides by the expected cohort size)."""

    total: np.ndarray  # float64
    divisor: float
    contributors: int

    @property
    def delta(self) -> np.ndarray:
        return (self.total / self.divisor).astype(wire.WIRE_DTYPE)


@dataclasses.dataclass
class Screened:
    """What `on_updates` leaves: the updates that go on, and those it rejected."""

    kept: list[ClientUpdate]
    rejected: list[Rejection] = dataclasses.field(default_factory=list)
    flags: list[ScreeningFlag] = dataclasses.field(default_factory=list)  # kept, but suspect


class Layer:
    """One layer of the chain; every part defaults to doing nothing."""

    name: str = "layer"
    needs_individual_updates: bool = False  # its server part must see each update
    streamable: bool = False  # it looks at one update at a time (aggregation.streaming)

    def initial_state(self, size: int) -> State:
        return {}

    def client(self, delta: np.ndarray, ctx: ClientContext) -> np.ndarray:
        return delta

    def on_updates(self, updates: list[ClientUpdate], rnd: RoundContext) -> Screened:
        return Screened(updates)

    def on_aggregate(self, aggregate: Aggregate, rnd: RoundContext) -> Aggregate:
        return aggregate

    def next_state(self, rnd: RoundContext) -> State:
        """This layer's part of the server state after the round."""
        return {}

    def report(self) -> dict[str, float]:
        """Metrics of the round just aggregated (names as logged to MLflow)."""
        return {}


class Weighting(Layer):
    """The layer that sets each client's weight in a mean (exactly one per chain)."""

    def client_weight(self, ctx: ClientContext) -> float:
        raise NotImplementedError

    def secure_unit(self, max_examples: int) -> int:
        """Integer weights under secure aggregation are client_weight x this unit."""
        return max_examples

    def secure_weight(self, ctx: ClientContext, max_examples: int) -> int:
        return max(1, round(self.client_weight(ctx) * self.secure_unit(max_examples)))

    def weights(self, updates: list[ClientUpdate], rnd: RoundContext) -> np.ndarray:
        """Weights of the updates (in the order given) on the server's plain path."""
        raise NotImplementedError

    def divisor(self, aggregate: Aggregate, rnd: RoundContext) -> float:
        return aggregate.divisor


class Combiner(Layer):
    """Turns the kept updates into one aggregate (exactly one per chain)."""

    def combine(
        self, updates: list[ClientUpdate], weighting: Weighting, rnd: RoundContext
    ) -> Aggregate:
        raise NotImplementedError


class ServerStep(Layer):
    """Moves the global model by the aggregated delta (the server optimizer)."""

    def apply(
        self, weights: np.ndarray, delta: np.ndarray, state: State
    ) -> tuple[np.ndarray, State]:
        raise NotImplementedError
