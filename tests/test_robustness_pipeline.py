"""An attack and its defence through the compiled pipeline (kfp.local), and the same
model from the simulation."""

import json
from pathlib import Path

import numpy as np
import pytest

from fedpipe import config
from fedpipe.artifacts import client_registry as registry_module
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.ops import local_run, tracking
from fedpipe.simulation import attacks
from fedpipe.simulation.runner import simulate

pytestmark = pytest.mark.pipeline


def test_pipeline_screens_out_a_scaling_attacker_and_matches_the_simulation(tmp_path):
    cfg = config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 6,
            "selection.clients_per_shard": 3,
            "training.rounds": 1,
            "aggregation.rule": "median",
            "aggregation.byzantine_clients": 1,
            "aggregation.screening.policy": "exclude",
            "simulation.attack.kind": "scaling",
            "simulation.attack.fraction": 0.2,
            "simulation.attack.scale": 20.0,
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.registered_model_name": "fedpipe-robust-e2e",
        }
    )
    (attacker,) = attacks.attackers(cfg)
    run = local_run.run_pipeline(cfg, tmp_path / "pipeline_root")

    client = tracking.client(cfg)
    (mlflow_run,) = client.search_runs([tracking.experiment_id(cfg)])
    run_id = mlflow_run.info.run_id
    for name in ("clients_flagged", "clients_rejected"):
        assert [m.value for m in client.get_metric_history(run_id, name)] == [1.0]
    report = Path(client.download_artifacts(run_id, "rounds/round_001.md", str(tmp_path)))
    assert f"| {attacker} | excluded | update norm" in report.read_text()
    registry = json.loads(
        Path(client.download_artifacts(run_id, "clients/registry.json", str(tmp_path))).read_text()
    )
    record = next(c for c in registry["clients"] if c["client_id"] == attacker)
    assert (record["flags"], record["failures"]) == (1, 1)
    # One flag folded into a perfect score leaves the memory weight of it.
    assert record["reliability"] == pytest.approx(registry_module.RELIABILITY_MEMORY)
    assert all(c["reliability"] == pytest.approx(1.0) for c in registry["clients"] if c != record)

    simulated = simulate(cfg, tmp_path / "sim", run_name="same-config", register=False)
    assert np.array_equal(simulated.model.weights, GlobalModel.load(run.model_path).weights)
    assert simulated.accuracy[-1] > 0.5
