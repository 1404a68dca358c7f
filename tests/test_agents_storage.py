"""Agents whose data lives in object storage: `fedpipe agent --data s3://...` and
`--data gs://...` against real servers on loopback (moto's S3 server, the GCS emulator),
with the credentials in that agent's environment only. The agents train on their data in
a round: the model equals the in-process run's on the same split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedpipe import config as run_config
from fedpipe.agents import data_folder
from fedpipe.agents.local import LocalFederation
from fedpipe.data import storage
from fedpipe.simulation.runner import simulate
from tests import servers

pytestmark = pytest.mark.pipeline

CLIENTS = 3


def test_agents_train_from_s3_and_gcs_data(tmp_path, monkeypatch):
    config = run_config.from_mapping(
        {
            "data.num_clients": CLIENTS,
            "selection.cohort_size": CLIENTS,
            "selection.clients_per_shard": CLIENTS,
            "training.rounds": 1,
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }
    )
    owners = data_folder.prepare(config, tmp_path / "owners")
    with (
        servers.s3_server(tmp_path) as s3,
        servers.gcs_server(tmp_path) as gcs_host,
        LocalFederation(tmp_path / "federation", CLIENTS) as fed,
    ):
        s3.client().create_bucket(Bucket="owner-0")
        for path in owners[0].iterdir():
            s3.client().put_object(Bucket="owner-0", Key=f"fl/{path.name}", Body=path.read_bytes())
        with monkeypatch.context() as gcs_env:  # the data owner's upload, not the pipeline's
            from google.cloud import storage as gcs

            gcs_env.setenv("STORAGE_EMULATOR_HOST", gcs_host)
            gcs.Client().create_bucket("owner-1")
            storage.upload_folder(owners[1], "gs://owner-1/fl")
        fed.start_coordinator()
        fed.start_agent(0, "s3://owner-0/fl", env=s3.env())
        fed.start_agent(1, "gs://owner-1/fl", env={"STORAGE_EMULATOR_HOST": gcs_host})
        fed.start_agent(2, owners[2])
        fed.wait_online(range(CLIENTS), timeout_s=300)
        remote = config.replace(fed.run_config(task_timeout_s=300.0))
        result = simulate(remote, tmp_path / "agents", register=False)

    outcome = json.loads((tmp_path / "agents" / "round_001" / "outcome.json").read_text())
    assert sorted(u["client_id"] for u in outcome["accepted"]) == list(range(CLIENTS))
    # Each remote owner's data was copied into that agent's own state folder, intact.
    for c in (0, 1):
        cache = fed.state_dir(c) / data_folder.CACHE_DIR
        assert cache.stat().st_mode & 0o077 == 0
        (copy,) = cache.glob(f"*/{data_folder.DATA_FILE}")
        assert copy.read_bytes() == (owners[c] / data_folder.DATA_FILE).read_bytes()
    # The agents trained on exactly their partitions: the model is the in-process one.
    simulated = simulate(
        config.replace({"clients.runtime": "simulated"}), tmp_path / "sim", register=False
    )
    np.testing.assert_allclose(result.model.weights, simulated.model.weights, atol=1e-6)
