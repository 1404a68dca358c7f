"""End to end: the compiled pipeline through kfp.local, against MLflow and the simulation."""

import builtins

import numpy as np
import pytest

from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.ops import local_run, tracking
from fedpipe.simulation.runner import simulate

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    from fedpipe import config

    root = tmp_path_factory.mktemp("pipeline")
    cfg = config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 6,
            "selection.clients_per_shard": 3,
            "training.rounds": 2,
            "tracking.uri": f"sqlite:///{root / 'mlflow.db'}",
            "tracking.registered_model_name": "fedpipe-e2e",
        }
    )
    printer = builtins.print
    run = local_run.run_pipeline(cfg, root / "pipeline_root")
    # kfp.local's per-task print indentation, swapped from the shards' threads, must not
    # stay behind: each leftover wrapper doubles the cost of every later print.
    assert builtins.print is printer
    return cfg, run, root


def test_pipeline_trains_logs_and_promotes(pipeline_run):
    cfg, run, root = pipeline_run
    client = tracking.client(cfg)
    (mlflow_run,) = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )
    accuracy = client.get_metric_history(mlflow_run.info.run_id, "accuracy")
    assert [m.step for m in accuracy] == [0, 1, 2]
    assert accuracy[-1].value > accuracy[0].value + 0.3
    assert len(client.get_metric_history(mlflow_run.info.run_id, "loss")) == 3
    for name in ("clients_accepted", "round_seconds", "per_client/train_loss/0"):
        assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, name)] == [1, 2]
    champion = client.get_model_version_by_alias("fedpipe-e2e", "champion")
    assert str(champion.version) == "1" and champion.run_id == mlflow_run.info.run_id
    assert "promoted to `@champion`" in run.registration
    # Two shards per round ran as separate local-train tasks.
    train_tasks = list(run.pipeline_root.glob("federated-training-*/for-loop-*/local-train*"))
    assert len(train_tasks) == 2 * cfg.training.rounds


def test_simulation_gives_the_pipeline_model_and_an_equal_model_is_not_promoted(
    pipeline_run, tmp_path
):
    cfg, run, _ = pipeline_run
    simulated = simulate(cfg, tmp_path / "sim", run_name="same-config")
    assert np.array_equal(simulated.model.weights, GlobalModel.load(run.model_path).weights)
    assert not simulated.registration.promoted
    assert "below margin" in simulated.registration.reason
    client = tracking.client(cfg)
    assert str(client.get_model_version_by_alias("fedpipe-e2e", "champion").version) == "1"
