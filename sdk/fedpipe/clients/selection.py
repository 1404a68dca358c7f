"""Client selection: which clients train this round, and how they are split into shards.

A policy sees the client registry and a random generator seeded by the run seed and the
round number, so a selection can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import numpy as np

from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.clients import history as client_history
from fedpipe.clients import linucb
from fedpipe.config import RunConfig


class SelectionPolicy(Protocol):
    @classmethod
    def from_config(cls, config: RunConfig) -> SelectionPolicy: ...

    def select(
        self, registry: ClientRegistry, cohort_size: int, rng: np.random.Generator
    ) -> list[int]: ...


class UniformRandom:
    """Every client equally likely, sampled without replacement."""

    @classmethod
    def from_config(cls, config: RunConfig) -> UniformRandom:
        return cls()

    def select(
        self, registry: ClientRegistry, cohort_size: int, rng: np.random.Generator
    ) -> list[int]:
        ids = [c.client_id for c in registry.clients]
        return sorted(int(i) for i in rng.choice(ids, size=cohort_size, replace=False))


def _known_loss(record: ClientRecord) -> float:
    if record.last_train_loss is not None:
        return record.last_train_loss
    return math.inf if client_history.times_selected(record) == 0 else -math.inf


@dataclasses.dataclass(frozen=True)
class PowerOfChoice:
    """Power-of-Choice (Cho et al., 2020): sample `candidates` clients in proportion to their
    data size, keep the cohort_size with the highest last local loss. Never-selected
    clients rank first; clients selected before that never reported a loss rank last
    (in the paper, candidates that do not answer are not ranked). Blind to system speed."""

    candidates: int = 20

    @classmethod
    def from_config(cls, config: RunConfig) -> PowerOfChoice:
        return cls(config.selection.power_of_choice_candidates)

    def select(
        self, registry: ClientRegistry, cohort_size: int, rng: np.random.Generator
    ) -> list[int]:
        records = registry.clients
        sizes = np.array([r.num_examples for r in records], dtype=np.float64)
        d = min(len(records), max(cohort_size, self.candidates))
        candidates = rng.choice(len(records), size=d, replace=False, p=sizes / sizes.sum())
        loss = np.array([_known_loss(records[i]) for i in candidates])
        chosen = candidates[np.argsort(-loss, kind="stable")[:cohort_size]]
        return sorted(records[i].client_id for i in chosen)


@dataclasses.dataclass(frozen=True)
class Oort:
    """Oort (Lai et al., OSDI 2021): exploit clients of high statistical utility
    (examples x last loss, plus a staleness bonus) times system utility ((T/t)^alpha when
    slower than the preferred round time T, here the deadline), and explore a share of
    never-selected clients. Our adaptation: utility is also multiplied by the client's
    reliability, since our clients can crash as well as be slow."""

    exploration: float = 0.2
    preferred_round_s: float | None = None
    straggler_penalty: float = 2.0
    cutoff: float = 0.95  # exploit among clients within 95% of the k-th best utility

    @classmethod
    def from_config(cls, config: RunConfig) -> Oort:
        return cls(config.selection.oort_exploration, config.simulation.systems.round_deadline_s)

    def utility(self, registry: ClientRegistry, explored: list[ClientRecord]) -> np.ndarray:
        """Oort utility of each explored client (higher is better)."""
        losses = [r.last_train_loss for r in explored if r.last_train_loss is not None]
        typical_loss = float(np.mean(losses)) if losses else 1.0
        statistical = np.array(
            [
                r.num_examples * (typical_loss if r.last_train_loss is None else r.last_train_loss)
                for r in explored
            ]
        )
        statistical /= max(statistical.max(), 1e-12)
        now = registry.completed_rounds + 1
        staleness = np.array(
            [math.sqrt(0.1 * math.log(now + 1) / max(1, r.last_round or 1)) for r in explored]
        )
        utility = (statistical + staleness) * np.array(
            [client_history.reliability(r) for r in explored]
        )
        if self.preferred_round_s is not None:
            t = np.array([r.last_simulated_duration_s or 0.0 for r in explored])
            slow = t > self.preferred_round_s
            utility[slow] *= (self.preferred_round_s / t[slow]) ** self.straggler_penalty
        return utility

    def select(
        self, registry: ClientRegistry, cohort_size: int, rng: np.random.Generator
    ) -> list[int]:
        explored = [r for r in registry.clients if client_history.times_selected(r) > 0]
        unexplored = [
            r.client_id for r in registry.clients if client_history.times_selected(r) == 0
        ]
        explore = min(
            len(unexplored),
            max(round(self.exploration * cohort_size), cohort_size - len(explored)),
        )
        exploit = cohort_size - explore
        chosen = [int(i) for i in rng.choice(unexplored, size=explore, replace=False)]
        if exploit:
            utility = self.utility(registry, explored)
            kth = np.sort(utility)[::-1][exploit - 1]
            pool = np.flatnonzero(utility >= self.cutoff * kth)
            p = utility[pool] + 1e-12
            picked = rng.choice(pool, size=exploit, replace=False, p=p / p.sum())
            chosen += [explored[i].client_id for i in picked]
        return sorted(chosen)


@dataclasses.dataclass(frozen=True)
class LinUCBSelection:
    """A contextual bandit (fedpipe.clients.linucb): the clients with the highest upper confidence
    bound on the held-out improvement they will be credited with, given their history.
    alpha scales exploration; never-selected clients have the widest bounds."""

    alpha: float = 0.5

    @classmethod
    def from_config(cls, config: RunConfig) -> LinUCBSelection:
        return cls(config.selection.linucb_alpha)

    def select(
        self, registry: ClientRegistry, cohort_size: int, rng: np.random.Generator
    ) -> list[int]:
        contexts = np.stack(
            [client_history.context(r, registry.completed_rounds) for r in registry.clients]
        )
        scores = linucb.scores(registry, contexts, self.alpha)
        order = rng.permutation(len(scores))  # random tie-break among equal scores
        best = order[np.argsort(-scores[order], kind="stable")[:cohort_size]]
        return sorted(registry.clients[i].client_id for i in best)


POLICIES: dict[str, type[SelectionPolicy]] = {
    "uniform": UniformRandom,
    "power_of_choice": PowerOfChoice,
    "oort": Oort,
    "linucb": LinUCBSelection,
}
# Policies that rank by each client's last loss: secure aggregation keeps a client's loss
# inside its masked vector, so they are refused with it (oort and linucb use the loss as
# one signal among others, and do without it).
RANKED_BY_CLIENT_LOSS = ("power_of_choice",)


def policy_for(config: RunConfig) -> SelectionPolicy:
    """The policy the config names (POLICIES is the one list of their names)."""
    return POLICIES[config.selection.policy].from_config(config)


def round_rng(seed: int, round_number: int) -> np.random.Generator:
    return np.random.default_rng([seed, round_number, 0x5E1EC7])


def split_into_shards(cohort: list[int], clients_per_shard: int) -> list[list[int]]:
    """Consecutive groups of at most clients_per_shard clients: one local-train task each."""
    return [cohort[i : i + clients_per_shard] for i in range(0, len(cohort), clients_per_shard)]
