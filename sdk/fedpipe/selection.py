"""Client selection: which clients train this round, and how they are split into shards.

A policy sees the client registry and a random generator seeded by the run seed and the
round number, so a selection can always be reproduced.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fedpipe.config import RunConfig
from fedpipe.registry import ClientRegistry


class SelectionPolicy(Protocol):
    def select(
        self, registry: ClientRegistry, cohort_size: int, rng: np.random.Generator
    ) -> list[int]: ...


class UniformRandom:
    """Every client equally likely, sampled without replacement."""

    def select(
        self, registry: ClientRegistry, cohort_size: int, rng: np.random.Generator
    ) -> list[int]:
        ids = [c.client_id for c in registry.clients]
        return sorted(int(i) for i in rng.choice(ids, size=cohort_size, replace=False))


POLICIES: dict[str, type[SelectionPolicy]] = {"uniform": UniformRandom}


def policy_for(config: RunConfig) -> SelectionPolicy:
    """The policy the config names (config.SELECTION_POLICIES lists the same names)."""
    return POLICIES[config.selection_policy]()


def round_rng(seed: int, round_number: int) -> np.random.Generator:
    return np.random.default_rng([seed, round_number, 0x5E1EC7])


def split_into_shards(cohort: list[int], clients_per_shard: int) -> list[list[int]]:
    """Consecutive groups of at most clients_per_shard clients: one local-train task each."""
    return [cohort[i : i + clients_per_shard] for i in range(0, len(cohort), clients_per_shard)]
