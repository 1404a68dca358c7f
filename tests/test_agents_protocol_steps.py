"""The agent answers the secure-aggregation protocol steps in its own process: they need
neither the data nor a model, so they neither wait for nor start its training worker
(which may be busy training, or still importing TensorFlow). Agents built in this process;
the steps are handed to them as the coordinator would hand them over."""

from __future__ import annotations

import time

import pytest

from fedpipe import config as run_config
from fedpipe.agents import data_folder, provisioning
from fedpipe.agents.agent import Agent
from fedpipe.agents.remote_clients import _task_meta, _transcript
from fedpipe.artifacts.round_plan import Cohort
from fedpipe.privacy.randomness import Randomness
from fedpipe.secagg import KeyAdvertisement, KeyShares
from fedpipe.secagg import rounds as sa

CLIENTS = 3
CONFIG = {"data.num_clients": CLIENTS, "selection.cohort_size": CLIENTS}


class WorkerUsed(AssertionError):
    pass


def _no_worker():
    raise WorkerUsed("the task was handed to the training worker")


@pytest.fixture
def agents(tmp_path, monkeypatch):
    config = run_config.from_mapping(CONFIG)
    owners = data_folder.prepare(config, tmp_path / "owners")
    tls = provisioning.provision(tmp_path / "tls", CLIENTS)
    made = []
    for c in range(CLIENTS):
        name = provisioning.client_cn(c)
        agent = Agent(
            str(owners[c]),
            "127.0.0.1:9",  # never dialled: the tasks are handed over directly
            tls.cert(name),
            tls.key(name),
            tls.ca_cert,
            tmp_path / f"state-{c}",
            warm_up=False,
        )
        monkeypatch.setattr(agent, "_pool", _no_worker)
        made.append(agent)
    yield made
    for agent in made:
        agent.stop()
        agent.channel.close()


def test_secagg_protocol_steps_are_answered_without_the_worker(agents, tmp_path):
    config = run_config.from_mapping({**CONFIG, "aggregation.secure.mode": "secagg"})
    clients = list(range(CLIENTS))
    cohort = Cohort(
        1, clients, [clients], False, time.time(), [1.0] * CLIENTS, Randomness().token_hex(16)
    )
    meta = {**_task_meta(config, cohort), "model_size": 16}

    ads = [
        KeyAdvertisement.from_dict(a._run("advertise", meta, {})[0]["advertisement"])
        for a in agents
    ]
    assert [ad.client_id for ad in ads] == clients
    sa.save_messages(tmp_path / "ads.json", "advertise", 1, ads, dict.fromkeys(clients, 0.0))
    files = {"transcript": _transcript([tmp_path / "ads.json"])}
    shares = [
        KeyShares.from_dict(a._run("share_keys", meta, files)[0]["key_shares"]) for a in agents
    ]
    # Each agent checked the others' signed advertisements and shared with both of them.
    assert [s.client_id for s in shares] == clients
    for s in shares:
        assert sorted(e.recipient for e in s.shares) == [c for c in clients if c != s.client_id]

    with pytest.raises(WorkerUsed):  # training does need the worker
        agents[0]._run("train", meta, {})
