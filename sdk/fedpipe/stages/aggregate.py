"""Aggregate: read the shards' updates, run the aggregation chain (validate, screen,
combine, privacy layers, server optimizer), check the quorum, write the new model.

Under secure aggregation the server holds only masked inputs: it unmasks their sum, and
the chain's server parts that need individual updates are refused by its builder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedpipe.aggregation import streaming, vector_math
from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import Aggregate, RoundContext
from fedpipe.aggregation.outcome import (
    AggregationOutcome,
    ClientStats,
    Rejection,
    require_quorum,
)
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ClientUpdate, ShardUnreadable, load_shard
from fedpipe.config import RunConfig
from fedpipe.ops import release
from fedpipe.secagg import rounds as secure_aggregation
from fedpipe.simulation import faults


def _collect(
    cohort: list[int], update_paths: list[str | Path]
) -> tuple[list[ClientUpdate], list[Rejection]]:
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
            rejections.append(Rejection(u.client_id, "not in this round's cohort"))
        elif u.client_id in seen:
            rejections.append(Rejection(u.client_id, "sent more than one update"))
        else:
            seen.add(u.client_id)
            kept.append(u)
    reason = "no update received" + (f" ({'; '.join(problems)})" if problems else "")
    rejections += [Rejection(c, reason) for c in cohort if c not in seen]
    return kept, rejections


def aggregate(
    config: RunConfig,
    plan_path: str | Path,
    model_path: str | Path,
    update_paths: list[str | Path],
    new_model_path: str | Path,
    outcome_path: str | Path,
    secagg_messages: Sequence[str | Path] = (),
) -> AggregationOutcome:
    """Write the new global model; raise QuorumNotMet (writing nothing) below quorum.
    Under secure aggregation the updates are masked inputs, and secagg_messages hold the
    round's protocol messages: only the survivors' sum is unmasked (ThresholdNotMet, and
    nothing written, when it cannot be). The aggregation chain does the rest."""
    plan = RoundPlan.load(plan_path)
    model = GlobalModel.load(model_path)
    cohort = plan.cohort
    _injected_crash(config, cohort.round_number, new_model_path)
    if cohort.stopped:
        outcome = AggregationOutcome(
            cohort.round_number, [], [], [], skipped=True, started_at=cohort.started_at
        )
        model.save(new_model_path)
        outcome.save(outcome_path)
        return outcome

    chain = build_chain(config)
    rnd = RoundContext(
        round_number=cohort.round_number,
        cohort=cohort.clients,
        announced_weights=dict(zip(cohort.clients, cohort.client_weights, strict=False)),
        state=model.server_state,
        spec=model.spec,
        secure=chain.secure,
    )
    secure, flags = None, []
    required = _quorum(config, len(cohort.clients))
    if chain.streams:  # one shard in memory at a time, whatever the cohort size
        streamed = streaming.weighted_sum(chain, update_paths, rnd)
        stats, rejected, combined = streamed.accepted, streamed.rejected, streamed.aggregate
        require_quorum(stats, rejected, len(cohort.clients), required)
    else:
        received, missing = _collect(cohort.clients, update_paths)
        if chain.secure and cohort.clients:
            secure = secure_aggregation.unmask_sum(config, chain, plan, received, secagg_messages)
            accepted, rejected = secure.accepted, secure.rejected + missing
        else:
            screened = chain.screen(received, rnd)
            accepted, rejected, flags = screened.kept, screened.rejected + missing, screened.flags
        require_quorum(accepted, rejected, len(cohort.clients), required)
        if secure:
            combined = secure.aggregate
        elif accepted:
            combined = chain.combine(accepted, rnd)
        else:  # an empty DP cohort: the DP layer releases its noise alone (_quorum)
            combined = Aggregate(np.zeros(model.weights.size, np.float64), 0.0, 0)
    weights, state, delta, metrics = chain.finish(combined, rnd, model.weights)
    GlobalModel(weights, model.spec, state, cohort.round_number).save(new_model_path)
    if secure:
        metrics.update(secure.report.metrics())
    if not chain.streams:
        stats = _client_stats(accepted, delta, secure is not None)
    outcome = AggregationOutcome(
        round_number=cohort.round_number,
        cohort=cohort.clients,
        accepted=stats,
        rejected=sorted(rejected, key=lambda r: r.client_id),
        skipped=False,
        started_at=cohort.started_at,
        metrics=metrics,
        flagged=flags,
    )
    if not release.client_level(config):
        # The outcome is a pipeline artifact a KFP UI reader can open: under DP it names
        # no client and counts none (the task's log, the server's view, keeps the counts).
        print(
            f"round {cohort.round_number}: {len(stats)} updates of {len(cohort.clients)} "
            "sampled clients aggregated",
            flush=True,
        )
        outcome = outcome.without_clients(release.round_metrics(config, metrics))
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


def _client_stats(
    accepted: list[ClientUpdate], delta: np.ndarray, secure: bool
) -> list[ClientStats]:
    """Each accepted update's figures; under secure aggregation the server never holds an
    update, so no norm or agreement, and a client's example count and loss are inside its
    masked vector (0 and NaN here; the protocol's report has the cohort's totals)."""
    if secure:
        return [
            ClientStats(u.client_id, u.num_examples, math.nan, u.duration_s, math.nan, None)
            for u in accepted
        ]
    delta_norm = vector_math.l2_norm(delta)
    stats = []
    for u in accepted:
        norm = vector_math.l2_norm(u.vector)
        agreement = vector_math.cosine(u.vector, delta, norm, delta_norm)
        stats.append(
            ClientStats(u.client_id, u.num_examples, u.train_loss, u.duration_s, norm, agreement)
        )
    return stats


def _quorum(config: RunConfig, sampled: int) -> int:
    """Valid updates the round needs. Under DP the Poisson cohort's size is random, and a
    round whose success depended on it would break what the accountant assumes (and its
    failure would tell that few clients were sampled): the quorum counts only clients
    that were sampled, so a small or empty cohort is a normal round. DP-FedAvg sums the
    clipped updates that arrive, adds its noise and divides by the expected cohort size:
    an empty cohort releases the noise alone. (Releasing noise alone whenever the sample
    falls below the quorum would not do: one more sampled client would then move the
    release by the whole cohort's sum, not by one clip norm.)"""
    if config.dp_enabled:
        return min(config.min_valid_updates, sampled)
    return config.min_valid_updates


def _injected_crash(config: RunConfig, round_number: int, new_model_path: str | Path) -> None:
    """Crash mid-way, leaving a half-written model behind: a retry (or a resumed run)
    must overwrite it, which it can because the stage is a function of its inputs."""
    attempt = faults.start_attempt(config, round_number, "aggregate")
    fault = faults.aggregate_fault(config, round_number, attempt)
    if fault:
        Path(new_model_path).parent.mkdir(parents=True, exist_ok=True)
        Path(new_model_path).write_bytes(b"half-written")
        faults.fail_task(config, round_number, "aggregate", fault, attempt)
