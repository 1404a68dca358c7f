"""Aggregation weights: FedAvg is the special case, the cap holds, history moves weight."""

import numpy as np
import pytest

from fedpipe import config
from fedpipe.aggregation.layer import RoundContext
from fedpipe.aggregation.mean import AnnouncedWeighting, Mean
from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.clients import weights as client_weights

SIZES = [10, 30, 60, 100]


def _registry(**history) -> ClientRegistry:
    return ClientRegistry(
        clients=[ClientRecord(i, n, [n // 2, n - n // 2], **history) for i, n in enumerate(SIZES)]
    )


@pytest.mark.parametrize("weighting", ["fedavg", "adaptive"])
def test_equal_histories_give_plain_fedavg_weights(weighting):
    cfg = config.from_mapping({"selection.client_weighting": weighting})
    registry = _registry(participation=3, failures=1, agreement=0.4)
    weights = client_weights.cohort_weights(cfg, registry, [0, 1, 2, 3])
    assert weights == pytest.approx(np.array(SIZES) / sum(SIZES))


def test_adaptive_weights_favour_reliable_agreeing_balanced_clients():
    cfg = config.from_mapping({"selection.client_weighting": "adaptive"})
    registry = _registry()
    good, flaky, one_class, opposed = registry.clients[:4]
    for record in registry.clients:
        record.num_examples = 50
    good.participation, good.agreement = 5, 0.9
    flaky.participation, flaky.failures, flaky.agreement = 1, 4, 0.9
    one_class.participation, one_class.agreement, one_class.label_histogram = 5, 0.9, [50, 0]
    opposed.participation, opposed.agreement = 5, -0.9
    w = client_weights.cohort_weights(cfg, registry, [0, 1, 2, 3])
    assert sum(w) == pytest.approx(1.0)
    assert w[0] == max(w) and min(w) == w[3] > 0
    assert w[0] == pytest.approx(2 * w[2])  # data quality 1 vs 0.5, all else equal


@pytest.mark.parametrize("max_weight", [0.1, 0.25, 0.4, 1.0])
def test_cap_holds_and_weights_stay_a_distribution(max_weight):
    raw = np.random.default_rng(1).lognormal(0, 2, size=8)
    w = client_weights.cap(raw, max_weight)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    assert w.max() <= max(max_weight, 1 / 8) + 1e-9
    order = np.argsort(raw)
    assert (np.diff(w[order]) >= -1e-12).all()  # capping keeps the ranking


def test_cap_that_cannot_hold_becomes_equal_weights():
    assert client_weights.cap(np.array([5.0, 1.0, 1.0]), 0.2) == pytest.approx([1 / 3] * 3)


def test_weighted_mean_renormalises_over_the_clients_that_reported():
    updates = [
        ClientUpdate.of(
            i,
            np.full(3, float(i), dtype=np.float32),
            num_examples=1,
            train_loss=0.0,
            duration_s=0.0,
        )
        for i in (0, 2)
    ]
    announced = {0: 0.5, 1: 0.25, 2: 0.25}  # client 1 dropped out
    rnd = RoundContext(1, [0, 1, 2], announced, {}, None, secure=False)

    def mean_with_cap(cap: float) -> np.ndarray:
        return Mean().combine(updates, AnnouncedWeighting(cap), rnd).delta

    assert mean_with_cap(1.0) == pytest.approx(np.full(3, 2 * 1 / 3))
    assert mean_with_cap(0.5) == pytest.approx(np.full(3, 1.0))
