"""Select: choose this round's cohort from the client registry and split it into shards."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from fedpipe.agents import remote_clients
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.round_plan import Cohort
from fedpipe.clients import probation, selection
from fedpipe.clients import weights as client_weights
from fedpipe.config import RunConfig


def select(
    config: RunConfig, round_number: int, registry_path: str | Path, cohort_path: str | Path
) -> list[int]:
    """Write the cohort and return the shard indices the local-train fan-out runs over."""
    registry = ClientRegistry.load(registry_path)
    if registry.stopped:
        # Pass-through: one empty shard keeps the pipeline's fan-out well-formed.
        cohort = Cohort(round_number, [], [[]], stopped=True, started_at=time.time())
    else:
        policy = selection.policy_for(config)
        rng = selection.round_rng(config.seed, round_number)
        candidates = probation.eligible(config, registry, round_number)
        size = config.selection.cohort_size
        if remote_clients.enabled(config):  # only agents that heartbeat now
            online = set(remote_clients.online_clients(config))
            kept = [c for c in candidates.clients if c.client_id in online]
            candidates = dataclasses.replace(candidates, clients=kept)
            size = min(size, len(kept))
            print(f"round {round_number}: {len(kept)} agents online: {sorted(online)}", flush=True)
        clients = policy.select(candidates, size, rng) if size else []
        shards = selection.split_into_shards(clients, config.selection.clients_per_shard)
        weights = client_weights.cohort_weights(config, registry, clients)
        cohort = Cohort(round_number, clients, shards, False, time.time(), weights)
    cohort.save(cohort_path)
    return list(range(len(cohort.shards)))
