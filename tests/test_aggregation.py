import numpy as np
import pytest

from fedpipe import stages
from fedpipe.aggregation import mean
from fedpipe.aggregation import outcome as aggregation
from fedpipe.artifacts import wire
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.artifacts.updates import ClientUpdate, load_shard, save_shard
from fedpipe.training import trainer


def _update(client_id, vector, n=10):
    return ClientUpdate.of(client_id, vector, num_examples=n, train_loss=1.0, duration_s=0.1)


def test_weighted_fedavg_weights_by_example_count():
    updates = [_update(0, np.ones(4, np.float32), 10), _update(1, np.zeros(4, np.float32), 30)]
    combined = mean.Mean().combine(updates, mean.ExampleWeighting(), rnd=None)
    assert np.allclose(combined.delta, 0.25)


@pytest.fixture
def round_one(small_config, tmp_path):
    """A real round 1 up to local training: plan, model and the two shard artifacts."""
    model, registry = tmp_path / "model", tmp_path / "registry"
    run_id = stages.initialize(small_config, model, registry, run_name="test")
    shards = stages.select(small_config, 1, registry, tmp_path / "cohort")
    stages.broadcast(small_config, model, tmp_path / "cohort", tmp_path / "plan")
    paths = [tmp_path / f"updates_{s}" for s in shards]
    for shard, path in zip(shards, paths, strict=True):
        stages.local_train(small_config, tmp_path / "plan", shard, path)
    return model, paths, run_id


def _corrupt_first_two(path):
    """Client A sends a vector of the wrong shape, client B one with a NaN."""
    updates = load_shard(path)
    a, b = updates[0], updates[1]
    short = a.vector[:-5].copy()
    nan = b.vector.copy()
    nan[0] = np.nan
    broken = [
        ClientUpdate.of(
            a.client_id, short, num_examples=a.num_examples, train_loss=0.0, duration_s=0.0
        ),
        ClientUpdate.of(
            b.client_id, nan, num_examples=b.num_examples, train_loss=0.0, duration_s=0.0
        ),
    ]
    save_shard(path, 1, 0, broken + updates[2:])
    return a.client_id, b.client_id


def test_malformed_updates_are_rejected_and_the_round_completes_on_quorum(
    small_config, round_one, tmp_path
):
    model, paths, _ = round_one
    wrong_shape, has_nan = _corrupt_first_two(paths[0])
    cfg = small_config.replace({"aggregation.quorum": 0.5})
    outcome = stages.aggregate(
        cfg, tmp_path / "plan", model, paths, tmp_path / "new_model", tmp_path / "outcome"
    )
    reasons = {r.client_id: r.reason for r in outcome.rejected}
    assert set(reasons) == {wrong_shape, has_nan}
    assert "shape" in reasons[wrong_shape] and "NaN" in reasons[has_nan]
    assert len(outcome.accepted) == 4
    new = GlobalModel.load(tmp_path / "new_model")
    assert np.all(np.isfinite(new.weights)) and new.round_number == 1
    assert "| rejected client | reason |" in outcome.to_markdown()


def test_below_quorum_the_round_fails_clearly_and_writes_no_model(
    small_config, round_one, tmp_path
):
    model, paths, _ = round_one
    _corrupt_first_two(paths[0])
    cfg = small_config.replace({"aggregation.quorum": 0.8})  # 5 of 6 needed, 4 valid
    with pytest.raises(aggregation.QuorumNotMet, match=r"at least 5 valid updates .* got 4"):
        stages.aggregate(
            cfg, tmp_path / "plan", model, paths, tmp_path / "new_model", tmp_path / "outcome"
        )
    assert not (tmp_path / "new_model").exists()
    assert GlobalModel.load(model).round_number == 0  # the previous model stands


def test_a_lost_shard_is_recorded_as_missing_clients(small_config, round_one, tmp_path):
    model, paths, _ = round_one
    paths[1].write_bytes(b"not an npz")
    outcome = stages.aggregate(
        small_config, tmp_path / "plan", model, paths, tmp_path / "new", tmp_path / "outcome"
    )
    assert len(outcome.accepted) == 3 and len(outcome.rejected) == 3
    assert all("no update received" in r.reason for r in outcome.rejected)


def test_aggregate_matches_a_hand_computed_fedavg(small_config, round_one, tmp_path):
    model, paths, _ = round_one
    stages.aggregate(
        small_config, tmp_path / "plan", model, paths, tmp_path / "new", tmp_path / "outcome"
    )
    updates = [u for p in paths for u in load_shard(p)]
    n = np.array([u.num_examples for u in updates], np.float64)
    mean = sum(w * u.vector.astype(np.float64) for w, u in zip(n, updates, strict=True)) / n.sum()
    start = GlobalModel.load(model).weights
    assert np.allclose(GlobalModel.load(tmp_path / "new").weights, start + mean, atol=1e-6)
    assert trainer.for_config(small_config).spec.size == start.size == updates[0].vector.size
    assert wire.checksum(start) != wire.checksum(GlobalModel.load(tmp_path / "new").weights)
