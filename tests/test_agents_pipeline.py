"""Rounds driven by the pipeline's stages (fedpipe.simulation.runner.simulate, in-process)
with the clients as agent processes on 127.0.0.1, each with its own data folder that the
run's config never names and the pipeline's side never opens."""

from __future__ import annotations

import json
import re
import sys
import threading
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

CLIENTS = 5  # agents_config's data.num_clients


_opened: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str | Path):
        _opened.append(str(args[0]))


@pytest.fixture(scope="module")
def federation(tmp_path_factory, agents_config):
    root = tmp_path_factory.mktemp("agents")
    owners = root / "owners"  # one folder per data owner, written once, then only agents read
    data_folder.prepare(agents_config("sqlite://"), owners)
    fed = LocalFederation(
        root / "federation", CLIENTS, heartbeat_interval_s=0.5, heartbeat_timeout_s=20.0
    )
    with fed:
        fed.start([owners / f"client-{c}" for c in range(CLIENTS)])
        fed.owners = owners
        yield fed


@pytest.fixture
def config(federation, agents_config, mlflow_uri) -> run_config.RunConfig:
    """The run, its client steps pointed at the federation's agents."""
    return agents_config(mlflow_uri, federation.run_config(task_timeout_s=240.0))


def test_secagg_rounds_through_agents_equal_the_simulated_clients(federation, config, tmp_path):
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
    federation, config, tmp_path, monkeypatch
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
    result = simulate(config, tmp_path / "run", register=False)
    round_2 = json.loads((tmp_path / "run" / "round_002" / "outcome.json").read_text())
    assert victim not in [u["client_id"] for u in round_2["accepted"]]
    assert round_2["metrics"]["secagg/dropouts_recovered"] == 1
    round_3 = json.loads((tmp_path / "run" / "round_003" / "outcome.json").read_text())
    assert victim in [u["client_id"] for u in round_3["accepted"]]
    assert result.accuracy[-1] > result.accuracy[0]
    model = GlobalModel.load(tmp_path / "run" / "round_003" / "model.npz")
    assert np.all(np.isfinite(model.weights))


class _KillAfterSharingKeys(threading.Thread):
    """Watches the logs while kfp.local runs the pipeline: SIGKILLs the victim's agent once
    it answered its first share_keys task, and restarts it once the coordinator gave up on
    the train task it sent the dead agent (so the restarted agent does not finish round 1
    from its saved protocol state: round 1 is a dropout). The thread lives until `done`:
    the agent it starts dies with it (LocalFederation's parent-death signal follows the
    starting thread)."""

    def __init__(self, fed: LocalFederation, victim: int) -> None:
        super().__init__(daemon=True, name="kill-after-sharing-keys")
        self.fed, self.victim = fed, victim
        self.agent_log, self.coordinator_log = fed.agent_log(victim), fed.coordinator_log
        self.offsets = (self.agent_log.stat().st_size, self.coordinator_log.stat().st_size)
        self.done = threading.Event()
        self.restarted = False

    def _since_start(self, log: Path, offset: int) -> str:
        return log.read_bytes()[offset:].decode(errors="replace")

    def run(self) -> None:
        shared = re.compile(r"task \w+ \(share_keys\) answered")
        gave_up = re.compile(rf"client {self.victim} task \w+ \(train\): ")
        while not self.done.wait(0.1):
            if self.victim in self.fed.agents:
                if shared.search(self._since_start(self.agent_log, self.offsets[0])):
                    self.fed.kill_agent(self.victim)
            elif gave_up.search(self._since_start(self.coordinator_log, self.offsets[1])):
                self.fed.start_agent(self.victim, self.fed.owners / f"client-{self.victim}")
                self.restarted = True
                self.done.wait()
                return


def test_the_compiled_pipeline_drives_the_agents_through_kfp_local(federation, config, tmp_path):
    """The same with the compiled pipeline's tasks as kfp.local subprocesses, three SecAgg+
    rounds, agent 4 SIGKILLed after it shared its keys in round 1: round 1 completes by
    dropout recovery; restarted, the agent serves rounds 2 and 3. The held-out accuracy
    rises from chance (about 0.1) to a registered model."""
    from fedpipe.ops import local_run, tracking

    victim = 4
    watcher = _KillAfterSharingKeys(federation, victim)
    watcher.start()
    # Round 2's select waits for the restarted agent (selection.min_available), which may
    # still be registering when round 1 ends.
    config = config.replace({"selection.min_available": CLIENTS})
    try:
        outcome = local_run.run_pipeline(config, tmp_path / "pipeline_root")
    finally:
        watcher.done.set()
        watcher.join(timeout=30)
        if victim in federation.agents:  # restarted by the watcher: ended with its thread
            federation.kill_agent(victim)
        federation.start_agent(victim, federation.owners / f"client-{victim}")
    assert watcher.restarted
    assert GlobalModel.load(outcome.model_path).round_number == 3
    accuracy = float(re.search(r"held-out accuracy ([0-9.]+)", outcome.registration).group(1))
    assert accuracy > 0.5
    client = tracking.client(config)

    def history(key: str) -> list[float]:
        metrics = client.get_metric_history(outcome.training.mlflow_run_id, key)
        return [m.value for m in sorted(metrics, key=lambda m: m.step)]

    assert history("secagg/dropouts_recovered") == [1.0, 0.0, 0.0]
    assert history("secagg/survivors") == [CLIENTS - 1, CLIENTS, CLIENTS]
