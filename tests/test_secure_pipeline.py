"""End to end: the compiled pipeline with secure aggregation on, through kfp.local (one
round here; tests/test_chain.py runs secagg+ with DP over two)."""

import pytest

from fedpipe import config
from fedpipe.ops import local_run, tracking
from fedpipe.simulation.runner import simulate

pytestmark = pytest.mark.pipeline


def test_secure_pipeline_learns_as_well_as_plain_federated_averaging(tmp_path):
    plain = config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 6,
            "selection.clients_per_shard": 3,
            "training.rounds": 1,
            "training.local_epochs": 2,
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.registered_model_name": "fedpipe-secure-e2e",
        }
    )
    secure = plain.replace({"aggregation.secure.mode": "secagg+"})
    run = local_run.run_pipeline(secure, tmp_path / "pipeline_root")
    reference = simulate(plain, tmp_path / "plain", run_name="plain", register=False)

    client = tracking.client(secure)
    (secure_run,) = [
        r
        for r in client.search_runs(
            [client.get_experiment_by_name(secure.tracking.experiment).experiment_id]
        )
        if r.info.run_name != "plain"
    ]
    accuracy = client.get_metric_history(secure_run.info.run_id, "accuracy")
    assert [m.step for m in accuracy] == [0, 1]
    assert abs(accuracy[-1].value - reference.accuracy[-1]) <= 0.01
    survivors = client.get_metric_history(secure_run.info.run_id, "secagg/survivors")
    assert [m.value for m in survivors] == [6.0]
    assert "secagg/bytes_per_client" in secure_run.data.metrics
    # The protocol's client-side steps ran as their own tasks, one per shard and round.
    root = run.pipeline_root
    tasks = 2 * secure.training.rounds  # one per shard and round
    for step in ("advertise-keys", "share-keys", "confirm-survivors", "unmask-response"):
        assert len(list(root.glob(f"federated-training-*/**/{step}*"))) == tasks
