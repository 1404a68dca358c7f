"""Rounds driven by the pipeline's stages (fedpipe.simulation.runner.simulate, in-process)
with the clients as agent processes on 127.0.0.1, each with its own data folder that the
run's config never names and the pipeline's side never opens."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fedpipe import config as run_config
from fedpipe import stages
from fedpipe.agents import data_folder
from fedpipe.agents.local import LocalFederation
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.artifacts.updates import load_shard
from fedpipe.secagg import rounds as sa
from fedpipe.simulation.runner import simulate

pytestmark = pytest.mark.pipeline

CLIENTS = 5


def _config(mlflow_uri: str, changes: dict | None = None) -> run_config.RunConfig:
    return run_config.from_mapping(
        {
            "data.num_clients": CLIENTS,
            "selection.cohort_size": CLIENTS,
            "selection.clients_per_shard": 3,
            "training.rounds": 3,
            "training.local_epochs": 2,
            "aggregation.secure.mode": "secagg+",
            "tracking.uri": mlflow_uri,
            "tracking.registered_model_name": "fedpipe-agents-test",
            **(changes or {}),
        }
    )


_opened: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str | Path):
        _opened.append(str(args[0]))


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("agents")
    owners = root / "owners"  # one folder per data owner, written once, then only agents read
    data_folder.prepare(_config("sqlite://"), owners)
    fed = LocalFederation(
        root / "federation", CLIENTS, heartbeat_interval_s=0.5, heartbeat_timeout_s=20.0
    )
    with fed:
        fed.start([owners / f"client-{c}" for c in range(CLIENTS)])
        fed.owners = owners
        yield fed


def _agents_config(fed: LocalFederation, mlflow_uri: str) -> run_config.RunConfig:
    return _config(mlflow_uri, fed.run_config(task_timeout_s=240.0))


def test_secagg_rounds_through_agents_equal_the_simulated_clients(federation, tmp_path):
    config = _agents_config(federation, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert str(federation.owners) not in config.to_json()
    sys.addaudithook(_audit)
    _opened.clear()
    result = simulate(config, tmp_path / "agents", register=False)
    seen = list(_opened)
    _opened.clear()
    assert not [p for p in seen if p.startswith(str(federation.owners))]
    assert result.accuracy[-1] > result.accuracy[0] > 0.2
    # Same split, same seeds: the masks cancel exactly, so the model is the simulated one.
    simulated = simulate(
        config.replace(
            {"clients.runtime": "simulated", "clients.coordinator": None, "clients.tls_dir": None}
        ),
        tmp_path / "simulated",
        register=False,
    )
    np.testing.assert_allclose(result.model.weights, simulated.model.weights, atol=1e-6)
    outcome = json.loads((tmp_path / "agents" / "round_003" / "outcome.json").read_text())
    assert sorted(u["client_id"] for u in outcome["accepted"]) == list(range(CLIENTS))
    # The active-adversary protocol ran: every advertisement signed and carrying the
    # agent's certificate, every survivor confirmed the survivor set before unmasking.
    transcript = tmp_path / "agents" / "round_003" / "secagg_transcript.json"
    messages = sa.load_messages([transcript], 3)
    assert all(a.signature and a.certificate for a in messages.advertisements)
    assert sorted(c.client_id for c in messages.confirmations) == list(range(CLIENTS))
    # Under SecAgg the pipeline's artifacts hold masked inputs only.
    for shard in (tmp_path / "agents").glob("round_*/updates_*.npz"):
        assert {u.encoding for u in load_shard(shard)} <= {"secagg"}
    with federation.remote() as remote:
        assert all(a.rounds_served >= 3 for a in remote.status())


def test_an_agent_killed_after_sharing_keys_is_a_dropout_and_rejoins(
    federation, tmp_path, monkeypatch
):
    """SIGKILL agent 4 in round 2 after key sharing, before local train: the round completes
    by dropout recovery; restarted, it serves round 3."""
    victim = 4
    local_train = stages.local_train

    def kill_then_train(config, plan_path, shard, *rest):
        n = json.loads((Path(plan_path).parent / "cohort.json").read_text())["round_number"]
        if n == 2 and shard == 0 and victim in federation.agents:
            federation.kill_agent(victim)
        return local_train(config, plan_path, shard, *rest)

    aggregate = stages.aggregate

    def aggregate_then_restart(config, plan_path, *rest):
        done = aggregate(config, plan_path, *rest)
        if victim not in federation.agents:
            federation.start_agent(victim, federation.owners / f"client-{victim}")
            federation.wait_online([victim], timeout_s=120)
        return done

    monkeypatch.setattr(stages, "local_train", kill_then_train)
    monkeypatch.setattr(stages, "aggregate", aggregate_then_restart)
    config = _agents_config(federation, f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = simulate(config, tmp_path / "run", register=False)
    round_2 = json.loads((tmp_path / "run" / "round_002" / "outcome.json").read_text())
    assert victim not in [u["client_id"] for u in round_2["accepted"]]
    assert round_2["metrics"]["secagg/dropouts_recovered"] == 1
    round_3 = json.loads((tmp_path / "run" / "round_003" / "outcome.json").read_text())
    assert victim in [u["client_id"] for u in round_3["accepted"]]
    assert result.accuracy[-1] > result.accuracy[0]
    model = GlobalModel.load(tmp_path / "run" / "round_003" / "model.npz")
    assert np.all(np.isfinite(model.weights))


def test_the_compiled_pipeline_drives_the_agents_through_kfp_local(federation, tmp_path):
    """The same with the compiled pipeline's tasks as kfp.local subprocesses: two rounds
    lift the held-out accuracy from chance (about 0.1) to a registered model."""
    from fedpipe.ops import local_run

    config = _agents_config(federation, f"sqlite:///{tmp_path / 'mlflow.db'}").replace(
        {"training.rounds": 2}
    )
    outcome = local_run.run_pipeline(config, tmp_path / "pipeline_root")
    assert GlobalModel.load(outcome.model_path).round_number == 2
    accuracy = float(re.search(r"held-out accuracy ([0-9.]+)", outcome.registration).group(1))
    assert accuracy > 0.5
