"""Select: choose this round's cohort from the client registry and split it into shards."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.round_plan import Cohort
from fedpipe.clients import probation, runtime, selection
from fedpipe.clients import weights as client_weights
from fedpipe.config import RunConfig
from fedpipe.privacy import accounting, cohort_sampling, randomness


def _online(config: RunConfig, client_ids: list[int]) -> list[int] | None:
    """The candidates reachable now (None: the runtime has no liveness). Like Flower's
    min_available_clients: wait up to selection.available_wait_s for
    selection.min_available of them, so that a late or restarted agent joins the round."""
    clients = runtime.for_config(config)
    wanted = min(config.selection.min_available, len(client_ids))
    deadline = time.monotonic() + config.selection.available_wait_s
    while True:
        online = clients.online(client_ids)
        if online is None or len(online) >= wanted or time.monotonic() >= deadline:
            return online
        time.sleep(0.25)


def select(
    config: RunConfig, round_number: int, registry_path: str | Path, cohort_path: str | Path
) -> list[int]:
    """Write the cohort and return the shard indices the local-train fan-out runs over."""
    registry = ClientRegistry.load(registry_path)
    secret = randomness.for_config(config)
    # A fresh id per round binds every SecAgg key and nonce of the round to it.
    session_id = secret.token_hex(16, "session", round_number)
    if registry.stopped:
        # Pass-through: one empty shard keeps the pipeline's fan-out well-formed.
        cohort = Cohort(
            round_number, [], [[]], stopped=True, started_at=time.time(), session_id=session_id
        )
    else:
        candidates = probation.eligible(config, registry, round_number)
        size = config.selection.cohort_size
        online = _online(config, [c.client_id for c in candidates.clients])
        if online is not None:  # only clients that can be reached now (agents that heartbeat)
            kept = [c for c in candidates.clients if c.client_id in set(online)]
            candidates = dataclasses.replace(candidates, clients=kept)
            size = min(size, len(kept))
            print(f"round {round_number}: {len(kept)} clients online: {sorted(online)}", flush=True)
        if config.dp_enabled:  # secret Poisson sampling, as the accountant assumes
            clients = cohort_sampling.poisson_cohort(
                [c.client_id for c in candidates.clients],
                accounting.sampling_rate(config),
                secret.generator("cohort", round_number),
            )
        else:
            policy = selection.policy_for(config)
            rng = selection.round_rng(config.seed, round_number)
            clients = policy.select(candidates, size, rng) if size else []
        shards = selection.split_into_shards(clients, config.selection.clients_per_shard) or [[]]
        # DP-FedAvg weighs clients equally; its registry holds no example counts.
        weights = (
            [] if config.dp_enabled else client_weights.cohort_weights(config, registry, clients)
        )
        cohort = Cohort(round_number, clients, shards, False, time.time(), weights, session_id)
    cohort.save(cohort_path)
    return list(range(len(cohort.shards)))
