"""Probation: clients that keep failing sit out a few rounds, then are re-admitted.

A filter applied to the client registry before any selection policy, so it works with
every policy: a client whose last `probation_failures` selections all failed is left out
until `probation_rounds` rounds have passed since its last failure. Re-admitted, one
accepted update clears its record; one more failure sends it back.
"""

from __future__ import annotations

import dataclasses

from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.config import RunConfig


def on_probation(config: RunConfig, record: ClientRecord, round_number: int) -> bool:
    if config.selection.probation_failures == 0 or record.last_failure_round is None:
        return False
    return (
        record.consecutive_failures >= config.selection.probation_failures
        and round_number - record.last_failure_round <= config.selection.probation_rounds
    )


def eligible(config: RunConfig, registry: ClientRegistry, round_number: int) -> ClientRegistry:
    """The registry a policy selects from: clients on probation left out, unless too few
    remain for a cohort, in which case those whose last failure is oldest come back first."""
    free = [c for c in registry.clients if not on_probation(config, c, round_number)]
    if len(free) < config.selection.cohort_size:
        waiting = sorted(
            (c for c in registry.clients if c not in free),
            key=lambda c: (c.last_failure_round, c.client_id),
        )
        back = {c.client_id for c in waiting[: config.selection.cohort_size - len(free)]}
        free = [c for c in registry.clients if c in free or c.client_id in back]
    if len(free) == len(registry.clients):
        return registry
    return dataclasses.replace(registry, clients=free)
