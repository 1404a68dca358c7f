"""Client history: what the server has learned about each client, as numbers that
selection policies and aggregation weights can use, and how a round updates it.

The raw history lives in the client registry (fedpipe.artifacts.client_registry); this
module derives features from it (reliability, data quality, mean credited reward, ...)
and records a finished round into it: simulated durations, timeouts, update agreement, the held-out
improvement credited to the participants, and the bandit's learning step.
"""

from __future__ import annotations

import math

import numpy as np

from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.clients import linucb
from fedpipe.config import RunConfig
from fedpipe.simulation import client_systems

# A selected client that sends nothing contributes nothing (and a straggler holds the
# round up to its deadline): it is credited this much below the round's reward.
DROPOUT_PENALTY = 0.1
AGREEMENT_DECAY = 0.5  # weight of the newest cosine in the running agreement
CONTEXT_FEATURES = (
    "bias",
    "mean_reward",
    "reliability",
    "label_entropy",
    "loss",
    "unexplored",
    "staleness",
)


def times_selected(record: ClientRecord) -> int:
    """Rounds the client was in the cohort (failures include timeouts)."""
    return record.participation + record.failures


def reliability(record: ClientRecord) -> float:
    """Share of selections that produced an accepted update, Laplace-smoothed (1/2 unseen)."""
    return (record.participation + 1) / (times_selected(record) + 2)


def label_entropy(record: ClientRecord) -> float:
    """Entropy of the client's label histogram over log(classes): 0 = one class, 1 = balanced.
    A proxy for data quality on non-IID data: a one-class client teaches little."""
    counts = np.asarray(record.label_histogram, dtype=np.float64)
    if counts.sum() <= 0 or counts.size < 2:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / math.log(counts.size))


def mean_reward(record: ClientRecord) -> float:
    return record.total_reward / max(1, times_selected(record))


def staleness(record: ClientRecord, completed_rounds: int) -> float:
    """Rounds since the client's last accepted update, as a share of the rounds so far
    (1 = never): on non-IID data, clients not heard from lately hold what the model lacks."""
    if record.last_round is None or completed_rounds == 0:
        return 1.0
    return (completed_rounds - record.last_round) / completed_rounds


def context(record: ClientRecord, completed_rounds: int) -> np.ndarray:
    """The bandit's view of a client (features in CONTEXT_FEATURES order, each in ~[0, 1])."""
    loss = record.last_train_loss
    num_classes = max(2, len(record.label_histogram))
    return np.array(
        [
            1.0,
            mean_reward(record),
            reliability(record),
            label_entropy(record),
            1.0 if loss is None else min(1.0, loss / math.log(num_classes)),
            1.0 if times_selected(record) == 0 else 0.0,
            staleness(record, completed_rounds),
        ]
    )


def round_reward(previous_accuracy: float | None, accuracy: float) -> float:
    """Held-out improvement of a round as a share of the error that was left, in [-1, 1]:
    later rounds gain less accuracy, and this keeps their improvements comparable."""
    if previous_accuracy is None:
        return 0.0
    remaining = max(1e-3, 1.0 - previous_accuracy)
    return float(np.clip((accuracy - previous_accuracy) / remaining, -1.0, 1.0))


def record_round(
    config: RunConfig, registry: ClientRegistry, outcome: AggregationOutcome, accuracy: float
) -> float:
    """Update the history with a finished round (before evaluate counts participation and
    failures) and teach the bandit; return the round's simulated duration."""
    by_id = {c.client_id: c for c in registry.clients}
    rounds = [
        client_systems.client_round(
            config, outcome.round_number, cid, by_id[cid].num_examples if cid in by_id else 0
        )
        for cid in outcome.cohort
    ]
    accepted = {s.client_id: s for s in outcome.accepted}
    reward = round_reward(registry.last_accuracy, accuracy)
    credits = {
        cid: reward if cid in accepted else reward - DROPOUT_PENALTY
        for cid in outcome.cohort
        if cid in by_id
    }
    contexts = {cid: context(by_id[cid], registry.completed_rounds) for cid in credits}
    linucb.learn(registry, contexts, credits)
    for r in rounds:
        record = by_id.get(r.client_id)
        if record is None:
            continue
        record.total_reward += credits[r.client_id]
        if r.fate == client_systems.TIMEOUT:
            # The straggler's late report still tells the server how long it took.
            record.timeouts += 1
            record.last_simulated_duration_s = r.duration_s
        elif r.client_id in accepted:
            record.last_simulated_duration_s = r.duration_s
            stats = accepted[r.client_id]
            record.last_update_norm = stats.update_norm
            if stats.agreement is not None:
                old = stats.agreement if record.agreement is None else record.agreement
                record.agreement = (1 - AGREEMENT_DECAY) * old + AGREEMENT_DECAY * stats.agreement
    seconds = client_systems.round_time(config, rounds)
    registry.simulated_time_s += seconds
    registry.last_accuracy = accuracy
    return seconds
