"""Evaluate: score the new global model on the held-out set, update the client registry,
log the round to MLflow, and decide whether the target accuracy is reached."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.clients import history as client_history
from fedpipe.config import RunConfig
from fedpipe.ops import progress, release, round_health, tracking
from fedpipe.privacy import accounting as privacy_accounting
from fedpipe.simulation import client_systems
from fedpipe.training import forward
from fedpipe.training.trainer import Evaluation


def _update_registry(registry: ClientRegistry, outcome: AggregationOutcome) -> None:
    by_id = {c.client_id: c for c in registry.clients}
    for stats in outcome.accepted:
        record = by_id[stats.client_id]
        record.participation += 1
        record.last_round = outcome.round_number
        # NaN under secure aggregation: the loss is inside the masked sum, not known here
        record.last_train_loss = stats.train_loss if math.isfinite(stats.train_loss) else None
        record.last_duration_s = stats.duration_s
        record.consecutive_failures = 0
    # A failure counts once per round, and only for registered clients that did not also
    # have an update accepted (a duplicate or a stranger's update is not their failure).
    accepted = {stats.client_id for stats in outcome.accepted}
    for client_id in {r.client_id for r in outcome.rejected} - accepted:
        if client_id in by_id:
            by_id[client_id].failures += 1
            by_id[client_id].consecutive_failures += 1
            by_id[client_id].last_failure_round = outcome.round_number
    flagged = {f.client_id for f in outcome.flagged}
    for client_id in accepted | flagged:
        if client_id in by_id:
            by_id[client_id].record_screening(client_id in flagged)
    registry.completed_rounds = outcome.round_number


@dataclasses.dataclass(frozen=True)
class RoundEvaluation:
    """The new model's held-out scores and every global metric of the round, as logged to
    MLflow; the KFP component logs the same metrics, so the two never disagree."""

    accuracy: float
    loss: float
    confusion_matrix: np.ndarray
    metrics: dict[str, float]


def _round_metrics(
    config: RunConfig,
    outcome: AggregationOutcome,
    result: Evaluation,
    seconds: float,
    registry: ClientRegistry,
    health: round_health.RoundHealth,
) -> dict[str, float]:
    """The round's global metrics: scores, participation, every aggregation layer's report
    (DP: the clip norm and epsilon; secure aggregation: protocol figures), round health;
    under DP only those the release policy allows (fedpipe.ops.release)."""
    values = {
        "accuracy": result.accuracy,
        "loss": result.loss,
        "clients_accepted": len(outcome.accepted),
        "clients_rejected": len(outcome.rejected),
        "clients_flagged": len(outcome.flagged),
        "round_seconds": seconds,
        "simulated_time_s": registry.simulated_time_s,
    }
    total = sum(c.num_examples for c in outcome.accepted)
    if total > 0:  # 0 under secure aggregation: its report has the mean (outcome.metrics)
        values["train_loss"] = sum(c.train_loss * c.num_examples for c in outcome.accepted) / total
    values.update(outcome.metrics)
    values.update(health.metrics())
    local_eps = [
        privacy_accounting.local_epsilon(config, c.num_examples, c.participation)
        for c in registry.clients
        if c.participation
    ]
    if local_eps and local_eps[0] is not None:  # DP-SGD: the worst silo's sample-level epsilon
        values["local_epsilon_max"] = max(local_eps)
    return release.round_metrics(config, {k: float(v) for k, v in values.items()})


def _client_metrics(config: RunConfig, outcome: AggregationOutcome) -> dict[str, float]:
    """Per-client figures, for debugging a federation; never released under DP."""
    if not release.client_level(config):
        return {}
    values = {}
    for c in outcome.accepted:
        if math.isfinite(c.train_loss):
            values[f"per_client/train_loss/{c.client_id}"] = c.train_loss
        if math.isfinite(c.update_norm):
            values[f"per_client/update_norm/{c.client_id}"] = c.update_norm
    return values


def _log_round(
    config: RunConfig, run_id: str, step: int, values: dict[str, float], report: str
) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlflow_client = tracking.client(config)
    # Written by MLflow's background logger while the next round trains (a SQLite commit
    # cost about a sixth of a round's compute); simulate flushes it before it returns, and a
    # pipeline task's process flushes it at exit.
    metrics = [Metric(k, v, now, step) for k, v in values.items()]
    mlflow_client.log_batch(run_id, metrics=metrics, synchronous=False)
    mlflow_client.log_text(run_id, report, f"rounds/round_{step:03d}.md")


def evaluate(
    config: RunConfig,
    model_path: str | Path,
    registry_path: str | Path,
    outcome_path: str | Path,
    new_registry_path: str | Path,
    mlflow_run_id: str,
) -> RoundEvaluation:
    model = GlobalModel.load(model_path)
    outcome = AggregationOutcome.load(outcome_path)
    registry = ClientRegistry.load(registry_path)
    result, _ = forward.heldout_evaluation(config, model.weights, model.spec)
    n = outcome.round_number
    if outcome.skipped:
        print(f"round {n:>3}/{config.training.rounds}: skipped, {registry.stop_reason}", flush=True)
        registry.save(new_registry_path)
        spent = privacy_accounting.reported_epsilon(config, registry.completed_rounds)
        metrics = {} if spent is None else {"epsilon": spent}  # the budget spent stays spent
        progress.emit(
            "round", round=n, rounds=config.training.rounds, skipped=True, stop=registry.stop_reason
        )
        return RoundEvaluation(result.accuracy, result.loss, result.confusion_matrix, metrics)

    round_sim_s = 0.0
    if registry.client_level:
        round_sim_s = client_history.record_round(config, registry, outcome, result.accuracy)
        _update_registry(registry, outcome)
    else:  # under DP the registry keeps no history (fedpipe.ops.release)
        registry.completed_rounds, registry.last_accuracy = n, result.accuracy
    if (
        config.training.target_accuracy is not None
        and result.accuracy >= config.training.target_accuracy
    ):
        registry.target_reached_at = n
    elif n < config.training.rounds and privacy_accounting.exceeds_budget(config, n + 1):
        registry.privacy_budget_reached_at = n
    registry.save(new_registry_path)
    round_health.record_completed(config, n)
    seconds = time.time() - outcome.started_at
    health = round_health.of_round(config, outcome)
    metrics = _round_metrics(config, outcome, result, seconds, registry, health)
    client_level = release.client_level(config)
    report = outcome.to_markdown(client_level) + health.to_markdown(client_level)
    _log_round(config, mlflow_run_id, n, {**metrics, **_client_metrics(config, outcome)}, report)
    print(
        f"round {n:>3}/{config.training.rounds}: accuracy {result.accuracy:.4f}  "
        f"loss {result.loss:.4f}  "
        + (f"clients {len(outcome.accepted)}/{len(outcome.cohort)}  " if client_level else "")
        + f"{seconds:.1f}s"
        + (f"  (simulated {round_sim_s:.1f}s)" if client_systems.heterogeneous(config) else "")
        + ("  (target reached)" if registry.target_reached_at == n else "")
        + ("  (privacy budget reached)" if registry.privacy_budget_reached_at == n else ""),
        flush=True,
    )
    progress.emit(
        "round",
        round=n,
        rounds=config.training.rounds,
        accuracy=result.accuracy,
        loss=result.loss,
        accepted=len(outcome.accepted) if client_level else None,
        rejected=len(outcome.rejected) if client_level else None,
        tasks_retried=health.tasks_retried,
        epsilon=metrics.get("epsilon"),
        stop=registry.stop_reason if registry.stopped else None,
    )
    return RoundEvaluation(result.accuracy, result.loss, result.confusion_matrix, metrics)
