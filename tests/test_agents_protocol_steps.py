"""The agent answers the secure-aggregation protocol steps in its own process: they need
neither the data nor a model, so they are never handed to its training worker (which may
be busy training, or still importing TensorFlow). A key advertisement that carries the
round plan queues the round's training on the worker at once, and the later train task
answers from that training instead of starting another. Agents built in this process, with
a stand-in worker that records what it is handed; the tasks are handed to them as the
coordinator would hand them over."""

from __future__ import annotations

import time
from concurrent import futures

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


class Worker:
    """Stands in for an agent's training worker: records each call it is handed; the
    training it is handed fails at once, with a mark."""

    def __init__(self) -> None:
        self.handed: list[tuple[str, dict]] = []

    def submit(self, fn, meta, *args) -> futures.Future:
        self.handed.append((fn.__name__, meta))
        trained: futures.Future = futures.Future()
        trained.set_exception(RuntimeError("the stand-in worker trains nothing"))
        return trained


@pytest.fixture
def agents(tmp_path):
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
        agent.worker = Worker()
        agent._pool = lambda agent=agent: agent.worker
        made.append(agent)
    yield made
    for agent in made:
        agent.channel.close()


def test_secagg_protocol_steps_never_reach_the_worker(agents, tmp_path):
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
    assert all(not a.worker.handed for a in agents)


def test_an_advertisement_with_the_plan_queues_the_training_the_train_task_uses(agents):
    config = run_config.from_mapping({**CONFIG, "aggregation.secure.mode": "secagg"})
    cohort = Cohort(1, [0, 1, 2], [[0, 1, 2]], False, time.time(), [1.0] * 3, "ab" * 16)
    meta = {**_task_meta(config, cohort), "model_size": 16, "plan_id": "round-1-plan"}
    agent = agents[0]

    answer, _ = agent._run("advertise", meta, {"plan": b"the round plan"})
    assert answer["advertisement"]["client_id"] == 0  # answered while the training is queued
    assert [(name, m["plan_id"]) for name, m in agent.worker.handed] == [
        ("_worker_train", "round-1-plan")
    ]
    with pytest.raises(RuntimeError, match="trains nothing"):  # the queued training's outcome
        agent._run("train", meta, {"transcript": b"[]"})
    assert len(agent.worker.handed) == 1  # not trained a second time

    with pytest.raises(ValueError, match="holds no round plan"):  # a plan it was never sent
        agent._run("train", {**meta, "plan_id": "another"}, {"transcript": b"[]"})
