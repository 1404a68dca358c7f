"""The release policy: what a run may publish, and under user-level DP, what it may not.

Released means readable by someone who is not the server: everything in the MLflow run
(metrics, params, tags, artifacts), the registered model version (tags, description), and
what a KFP UI reader opens (the tasks' Metrics, ClassificationMetrics and Markdown, the
client registry). Under DP-FedAvg the accountant's epsilon covers only the noised models
and what is computed from them and from the config, so nothing client-level may be
released: no per-client metric, no client id, no label histogram, no update norm or loss
of a client, no exact count of clipped updates, no cohort membership or size. The filter
is fail-closed: a metric a new layer reports is withheld under DP until it is added here
(tests/test_dp_release.py lists the same set, so adding one is reviewed).

The server's own view (the round's cohort and plan, the update shards, the secure
aggregation transcript, the aggregation outcome, the task logs) is not a release: the
server already holds it to run the protocol.
"""

from __future__ import annotations

from fedpipe.config import RunConfig

# Round metrics released under DP: held-out scores of the noised model, the privacy
# spent, the (noised) clip norm, and task-level health (retries and faults of the tasks,
# not of clients). Withheld: client counts (they reveal the Poisson cohort's size),
# train_loss (an un-noised mean of client losses), health/clients_lost, the simulated
# clock (computed from the cohort's members), round_seconds (a round's wall clock grows
# with the number of clients it trains), local_epsilon_max (one silo's size and
# participation), secagg/* (survivors, dropouts and bytes follow the cohort size).
DP_ROUND_METRICS = frozenset(
    {
        "accuracy",
        "loss",
        "epsilon",
        "dp_clip_norm",
        "health/tasks_retried",
        "health/failed_attempts",
        "health/time_lost_s",
        "health/faults",
    }
)


def client_level(config: RunConfig) -> bool:
    """May client-level values (per-client history, metrics, ids) be released?"""
    return not config.dp_enabled


def round_metrics(config: RunConfig, values: dict[str, float]) -> dict[str, float]:
    """The round metrics that may be released: all of them without DP, under DP only
    DP_ROUND_METRICS."""
    if client_level(config):
        return dict(values)
    return {k: v for k, v in values.items() if k in DP_ROUND_METRICS}
