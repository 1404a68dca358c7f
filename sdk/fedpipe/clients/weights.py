"""Aggregation weights per client: plain FedAvg (example counts) or adaptive weights from
the client's history, announced in the round plan so that the plain aggregator and a
secure aggregator (where clients scale their own updates) read the same numbers.

Adaptive weight of client i in a cohort (see docs/client_selection.md):

    raw_i = n_i * q_i * r_i * c_i
    q_i = 0.5 + 0.5 * H_i          data quality: H_i = label entropy / log(classes)
    r_i = (accepted_i + 1) / (selected_i + 2)      reliability
    c_i = max(0.05, (1 + a_i) / 2)                contribution: a_i running cosine of the
                                                  client's update with the aggregate
                                                  (0 before the first one: c_i = 0.5)
    w_i = cap(raw_i / sum_j raw_j, max_client_weight)

cap() lowers every weight above the cap to the cap and hands the excess to the others in
proportion to their weights, until none is above it. When q, r and c are equal across the
cohort and the cap does not bind, w_i = n_i / sum_j n_j: plain FedAvg.
"""

from __future__ import annotations

import numpy as np

from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.clients import history as client_history
from fedpipe.config import RunConfig

MIN_CONTRIBUTION = 0.05  # an opposing update still counts a little: it may be right


def adaptive_factor(record: ClientRecord) -> float:
    """q_i * r_i * c_i of the formula above."""
    quality = 0.5 + 0.5 * client_history.label_entropy(record)
    agreement = 0.0 if record.agreement is None else float(np.clip(record.agreement, -1, 1))
    contribution = max(MIN_CONTRIBUTION, (1.0 + agreement) / 2.0)
    return quality * client_history.reliability(record) * contribution


def cap(weights: np.ndarray, max_weight: float) -> np.ndarray:
    """Normalised weights with none above max_weight (raised to 1/len when it cannot hold)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    limit = max(max_weight, 1.0 / len(w))
    capped = np.zeros(len(w), dtype=bool)
    while True:
        over = (w > limit + 1e-12) & ~capped
        if not over.any():
            return w
        capped |= over
        free = 1.0 - limit * capped.sum()
        rest = w[~capped]
        w[capped] = limit
        w[~capped] = rest * free / rest.sum() if rest.sum() > 0 else free / max(1, len(rest))


def cohort_weights(config: RunConfig, registry: ClientRegistry, cohort: list[int]) -> list[float]:
    """The weight announced for each cohort client, in cohort order (empty cohort: [])."""
    if not cohort:
        return []
    by_id = {c.client_id: c for c in registry.clients}
    records = [by_id[i] for i in cohort]
    raw = np.array([r.num_examples for r in records], dtype=np.float64)
    if config.selection.client_weighting == "adaptive":
        raw *= [adaptive_factor(r) for r in records]
    return [float(w) for w in cap(raw, config.selection.max_client_weight)]
