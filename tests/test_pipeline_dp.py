"""End to end with DP on: the compiled pipeline through kfp.local stops at the budget."""

import json

import numpy as np
import pytest

from fedpipe import config
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.ops import local_run, tracking
from fedpipe.privacy import accounting as privacy_accounting
from fedpipe.simulation.runner import simulate

pytestmark = pytest.mark.pipeline


def test_pipeline_with_dp_logs_epsilon_stops_at_the_budget_and_tags_the_model(tmp_path):
    cfg = config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 3,
            "selection.clients_per_shard": 3,
            "training.rounds": 3,
            "training.local_epochs": 2,
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.noise_multiplier": 0.8,
            "aggregation.dp.delta": 0.01,
            "privacy.mode": "reproducible-simulation",
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.registered_model_name": "fedpipe-e2e-dp",
        }
    )
    eps = [privacy_accounting.epsilon(cfg, r) for r in (1, 2, 3)]
    cfg = cfg.replace(
        {"aggregation.dp.target_epsilon": (eps[1] + eps[2]) / 2}
    )  # round 3 would exceed it
    run = local_run.run_pipeline(cfg, tmp_path / "pipeline_root")

    client = tracking.client(cfg)
    (mlflow_run,) = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )
    history = client.get_metric_history(mlflow_run.info.run_id, "epsilon")
    assert [(m.step, m.value) for m in history] == [(1, eps[0]), (2, eps[1])]
    assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "accuracy")] == [
        0,
        1,
        2,
    ]
    version = client.get_model_version_by_alias("fedpipe-e2e-dp", "champion")
    assert version.tags["dp_rounds"] == "2"
    assert float(version.tags["dp_epsilon"]) == pytest.approx(eps[1], rel=1e-5)
    assert version.tags["dp_accountant"] == "rdp"
    assert "promoted to `@champion`" in run.registration
    # The KFP Metrics of each evaluate task carry epsilon (the skipped round 3 repeats it).
    outputs = run.pipeline_root.glob("federated-training-*/evaluate*/executor_output.json")
    logged = [
        json.loads(path.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]["epsilon"]
        for path in outputs
    ]
    assert sorted(logged) == pytest.approx([eps[0], eps[1], eps[1]])
    # In reproducible-simulation mode the noise and the cohorts flow from the seed: the
    # simulation gives the pipeline's model exactly.
    simulated = simulate(cfg, tmp_path / "sim", run_name="same-config", register=False)
    assert np.array_equal(simulated.model.weights, GlobalModel.load(run.model_path).weights)
