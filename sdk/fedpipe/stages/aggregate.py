"""Aggregate: validate the shards' updates, check the quorum, FedAvg, server optimizer step.

The component is called secure_aggregate: secure aggregation will unmask only the sum
here, and the stage's inputs and outputs stay the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedpipe.aggregation import outcome as aggregation
from fedpipe.aggregation import screening, server_optimizers
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ClientUpdate, ShardUnreadable, load_shard
from fedpipe.clients import weights as client_weights
from fedpipe.config import RunConfig
from fedpipe.privacy import dp_fedavg
from fedpipe.secagg import rounds as secure_aggregation
from fedpipe.simulation import faults


def _collect(
    cohort: list[int], update_paths: list[str | Path]
) -> tuple[list[ClientUpdate], list[aggregation.Rejection]]:
    """Read every shard artifact; unreadable shards and absent clients become rejections."""
    updates, problems = [], []
    for path in update_paths:
        try:
            updates.extend(load_shard(path))
        except ShardUnreadable as e:  # load_shard turns every failure into this
            problems.append(str(e))
    seen: set[int] = set()
    rejections = []
    kept = []
    for u in updates:
        if u.client_id not in cohort:
            rejections.append(aggregation.Rejection(u.client_id, "not in this round's cohort"))
        elif u.client_id in seen:
            rejections.append(aggregation.Rejection(u.client_id, "sent more than one update"))
        else:
            seen.add(u.client_id)
            kept.append(u)
    reason = "no update received" + (f" ({'; '.join(problems)})" if problems else "")
    rejections += [aggregation.Rejection(c, reason) for c in cohort if c not in seen]
    return kept, rejections


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of a client's update with the aggregate (0 when either is zero)."""
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a.astype(np.float64), b) / norms) if norms > 0 else 0.0


def aggregate(
    config: RunConfig,
    plan_path: str | Path,
    model_path: str | Path,
    update_paths: list[str | Path],
    new_model_path: str | Path,
    outcome_path: str | Path,
    secagg_messages: Sequence[str | Path] = (),
) -> aggregation.AggregationOutcome:
    """Write the new global model; raise QuorumNotMet (writing nothing) below quorum.
    Under secure aggregation the updates are masked inputs, and secagg_messages hold the
    round's protocol messages: only the survivors' sum is unmasked (ThresholdNotMet, and
    nothing written, when it cannot be)."""
    plan = RoundPlan.load(plan_path)
    model = GlobalModel.load(model_path)
    cohort = plan.cohort
    _injected_crash(config, cohort.round_number, new_model_path)
    if cohort.stopped:
        outcome = aggregation.AggregationOutcome(
            cohort.round_number, [], [], [], skipped=True, started_at=cohort.started_at
        )
        model.save(new_model_path)
        outcome.save(outcome_path)
        return outcome

    received, missing = _collect(cohort.clients, update_paths)
    secure = None
    if secure_aggregation.enabled(config):
        secure = secure_aggregation.unmask_mean(config, plan, received, secagg_messages)
        accepted, rejected = secure.accepted, secure.rejected
    else:
        accepted, rejected = aggregation.screen(received, model.spec)
    rejected += missing
    screened = screening.screen_norms(
        accepted, config.aggregation.screening.policy, config.aggregation.screening.threshold
    )
    accepted = screened.kept
    rejected += [
        aggregation.Rejection(f.client_id, f.reason)
        for f in screened.flags
        if f.action == "excluded"
    ]
    aggregation.require_quorum(accepted, rejected, len(cohort.clients), config.min_valid_updates)
    private = None
    if secure:
        delta = secure.mean
    elif config.dp_enabled:
        private = dp_fedavg.private_mean(config, accepted, cohort.round_number, model.server_state)
        delta = private.delta
    elif config.selection.client_weighting == "adaptive":
        announced = dict(zip(cohort.clients, cohort.client_weights, strict=True))
        delta = client_weights.weighted_mean(
            accepted, announced, config.selection.max_client_weight
        )
    else:
        delta = aggregation.aggregator_for(config).aggregate(accepted)
    weights, state = server_optimizers.apply(config, model.weights, delta, model.server_state)
    if private is not None:
        state.update(private.state)
    GlobalModel(weights, model.spec, state, cohort.round_number).save(new_model_path)
    outcome = aggregation.AggregationOutcome(
        round_number=cohort.round_number,
        cohort=cohort.clients,
        accepted=[
            aggregation.ClientStats(
                u.client_id,
                u.num_examples,
                u.train_loss,
                u.duration_s,
                float("nan") if secure else float(np.linalg.norm(u.vector)),
                None if secure else _cosine(u.vector, delta),
            )
            for u in accepted
        ],
        rejected=sorted(rejected, key=lambda r: r.client_id),
        skipped=False,
        started_at=cohort.started_at,
        dp_clip_norm=private.clip_norm if private else None,
        dp_clipped=private.clipped if private else 0,
        secure_aggregation=dataclasses.asdict(secure.report) if secure else None,
        flagged=screened.flags,
    )
    outcome.save(outcome_path)
    for r in outcome.rejected:
        print(f"round {cohort.round_number}: client {r.client_id} rejected: {r.reason}", flush=True)
    for f in outcome.flagged:
        if f.action != "excluded":
            print(
                f"round {cohort.round_number}: client {f.client_id} {f.action}: {f.reason}",
                flush=True,
            )
    return outcome


def _injected_crash(config: RunConfig, round_number: int, new_model_path: str | Path) -> None:
    """Crash mid-way, leaving a half-written model behind: a retry (or a resumed run)
    must overwrite it, which it can because the stage is a function of its inputs."""
    attempt = faults.start_attempt(config, round_number, "aggregate")
    fault = faults.aggregate_fault(config, round_number, attempt)
    if fault:
        Path(new_model_path).parent.mkdir(parents=True, exist_ok=True)
        Path(new_model_path).write_bytes(b"half-written")
        faults.fail_task(config, round_number, "aggregate", fault, attempt)
