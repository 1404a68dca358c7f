"""Evaluate: score the new global model on the held-out set, update the client registry,
log the round to MLflow, and decide whether the target accuracy is reached."""

from __future__ import annotations

import math
import time
from pathlib import Path

from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.clients import history as client_history
from fedpipe.config import RunConfig
from fedpipe.ops import round_health, tracking
from fedpipe.privacy import accounting as privacy_accounting
from fedpipe.secagg import rounds as secure_aggregation
from fedpipe.simulation import client_systems
from fedpipe.training import forward
from fedpipe.training.trainer import Evaluation


def _update_registry(registry: ClientRegistry, outcome: AggregationOutcome) -> None:
    by_id = {c.client_id: c for c in registry.clients}
    for stats in outcome.accepted:
        record = by_id[stats.client_id]
        record.participation += 1
        record.last_round = outcome.round_number
        record.last_train_loss = stats.train_loss
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


def _log_round(
    config: RunConfig, run_id: str, outcome: AggregationOutcome, result: Evaluation, seconds: float
) -> None:
    from mlflow.entities import Metric

    step, now = outcome.round_number, int(time.time() * 1000)
    values = {
        "accuracy": result.accuracy,
        "loss": result.loss,
        "clients_accepted": len(outcome.accepted),
        "clients_rejected": len(outcome.rejected),
        "clients_flagged": len(outcome.flagged),
        "round_seconds": seconds,
    }
    total = sum(c.num_examples for c in outcome.accepted)
    if total > 0:  # 0 under secure aggregation: the counts are inside the masked sum
        values["train_loss"] = sum(c.train_loss * c.num_examples for c in outcome.accepted) / total
    if outcome.dp_clip_norm is not None:
        values["dp_clip_norm"] = outcome.dp_clip_norm
        values["dp_clipped_fraction"] = outcome.dp_clipped / max(1, len(outcome.accepted))
        spent = privacy_accounting.reported_epsilon(config, outcome.round_number)
        if spent is not None:
            values["epsilon"] = spent
    for c in outcome.accepted:
        values[f"per_client/train_loss/{c.client_id}"] = c.train_loss
        if math.isfinite(c.update_norm):
            values[f"per_client/update_norm/{c.client_id}"] = c.update_norm
    if outcome.secure_aggregation:
        values.update(secure_aggregation.ProtocolReport(**outcome.secure_aggregation).metrics())
    health = round_health.of_round(config, outcome)
    values.update(health.metrics())
    metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
    mlflow_client = tracking.client(config)
    mlflow_client.log_batch(run_id, metrics=metrics)
    report = outcome.to_markdown() + health.to_markdown()
    mlflow_client.log_text(run_id, report, f"rounds/round_{step:03d}.md")


def evaluate(
    config: RunConfig,
    model_path: str | Path,
    registry_path: str | Path,
    outcome_path: str | Path,
    new_registry_path: str | Path,
    mlflow_run_id: str,
) -> Evaluation:
    model = GlobalModel.load(model_path)
    outcome = AggregationOutcome.load(outcome_path)
    registry = ClientRegistry.load(registry_path)
    result, _ = forward.heldout_evaluation(config, model.weights, model.spec)
    n = outcome.round_number
    if outcome.skipped:
        print(f"round {n:>3}/{config.training.rounds}: skipped, {registry.stop_reason}", flush=True)
        registry.save(new_registry_path)
        return result

    round_sim_s = client_history.record_round(config, registry, outcome, result.accuracy)
    _update_registry(registry, outcome)
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
    _log_round(config, mlflow_run_id, outcome, result, seconds)
    local_eps = [
        privacy_accounting.local_epsilon(config, c.num_examples, c.participation)
        for c in registry.clients
        if c.participation
    ]
    if local_eps and local_eps[0] is not None:  # DP-SGD: the worst silo's sample-level epsilon
        tracking.client(config).log_metric(
            mlflow_run_id, "local_epsilon_max", max(local_eps), step=n
        )
    tracking.client(config).log_metric(
        mlflow_run_id, "simulated_time_s", registry.simulated_time_s, step=n
    )
    print(
        f"round {n:>3}/{config.training.rounds}: accuracy {result.accuracy:.4f}  loss {result.loss:.4f}  "
        f"clients {len(outcome.accepted)}/{len(outcome.cohort)}  {seconds:.1f}s"
        + (f"  (simulated {round_sim_s:.1f}s)" if client_systems.heterogeneous(config) else "")
        + ("  (target reached)" if registry.target_reached_at == n else "")
        + ("  (privacy budget reached)" if registry.privacy_budget_reached_at == n else ""),
        flush=True,
    )
    return result
