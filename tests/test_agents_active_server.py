"""Secure aggregation with client agents against an active server: the coordinator and
the pipeline relay every protocol message, so here the relay itself is the attacker.
Real agent processes and a coordinator on 127.0.0.1 (fedpipe.agents.local); the rounds are
driven by the pipeline's stages in-process (fedpipe.simulation.runner.simulate). The
honest rounds (signed, confirmed, and equal to the simulated clients' model) are in
tests/test_agents_pipeline.py."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedpipe import config as run_config
from fedpipe import secagg, stages
from fedpipe.agents import data_folder, identity, provisioning
from fedpipe.agents.local import LocalFederation
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.secagg import InconsistentView, KeyAdvertisement, SubstitutedKey
from fedpipe.secagg import rounds as sa
from fedpipe.simulation.runner import simulate

CLIENTS = 4  # two shards of two; secagg (complete graph), t = ceil(0.6 * 4) = 3


def _config(changes: dict | None = None) -> run_config.RunConfig:
    return run_config.from_mapping(
        {
            "data.num_clients": CLIENTS,
            "selection.cohort_size": CLIENTS,
            "selection.clients_per_shard": 2,
            "training.rounds": 1,
            "training.local_epochs": 1,
            "aggregation.secure.mode": "secagg",
            **(changes or {}),
        }
    )


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("active")
    owners = root / "owners"
    data_folder.prepare(_config(), owners)
    fed = LocalFederation(
        root / "federation", CLIENTS, heartbeat_interval_s=0.5, heartbeat_timeout_s=20.0
    )
    with fed:
        yield fed.start([owners / f"client-{c}" for c in range(CLIENTS)])


def _agents_config(fed: LocalFederation, tmp_path: Path) -> run_config.RunConfig:
    mlflow = {"tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return _config({**fed.run_config(task_timeout_s=240.0), **mlflow})


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def _replace_advertisement(path: Path, forged: KeyAdvertisement) -> None:
    records = _records(path)
    for record in records:
        if record["step"] == "advertise":
            record["messages"] = [
                forged.to_dict() if m["client_id"] == forged.client_id else m
                for m in record["messages"]
            ]
    path.write_text(json.dumps(records))


def _assert_nothing_unmasked(run: Path) -> None:
    """The round stopped before aggregate: no model, no outcome, no unmasking response."""
    assert not (run / "round_001" / "model.npz").exists()
    assert not (run / "round_001" / "outcome.json").exists()
    for path in (run / "round_001").glob("secagg_unmask_response_*.json"):
        assert all(not r["messages"] for r in _records(path))


def _a_swapped_mask_key(ad: KeyAdvertisement, plan: RoundPlan, tmp: Path) -> KeyAdvertisement:
    """Client 1's certificate and signature kept, its mask key replaced by the server's."""
    server_key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    return dataclasses.replace(ad, mask_public_key=server_key)


def _another_federations_client(ad: KeyAdvertisement, plan: RoundPlan, tmp: Path):
    """A whole advertisement for client 1 made by the server: fresh keys, validly signed
    by a key that a certificate binds, from a CA the server runs itself."""
    other = provisioning.provision(tmp / "server-ca", CLIENTS)
    name = provisioning.client_cn(1)
    fake = identity.AgentIdentity.load(1, other.cert(name), other.key(name), other.ca_cert)
    session = sa.session_for(_config(), plan.cohort, plan.spec.size)
    client = secagg.SecAggClient(session, 1, os.urandom(32), identity=fake.key)
    return dataclasses.replace(client.advertise(), certificate=fake.certificate_pem)


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (_a_swapped_mask_key, "does not verify under its registered signing key"),
        (_another_federations_client, "not issued by the federation CA"),
    ],
)
def test_a_relay_that_substitutes_an_agents_key_aborts_the_round(
    federation, tmp_path, monkeypatch, forge, reason
):
    relay = stages.relay_messages

    def substituting_relay(message_paths, out_path):
        relay(message_paths, out_path)
        if Path(out_path).name == "secagg_keys.json":  # the advertisements, to every shard
            plan = RoundPlan.load(Path(out_path).parent / "plan.npz")
            ads = sa.load_messages([out_path], plan.cohort.round_number).advertisements
            genuine = next(a for a in ads if a.client_id == 1)
            _replace_advertisement(Path(out_path), forge(genuine, plan, tmp_path))

    monkeypatch.setattr(stages, "relay_messages", substituting_relay)
    run = tmp_path / "run"
    with pytest.raises(SubstitutedKey, match=reason):
        simulate(_agents_config(federation, tmp_path), run, register=False)
    # The agents refused at key sharing: no share and no masked update left them.
    assert not list((run / "round_001").glob("updates_*.npz"))
    _assert_nothing_unmasked(run)


def test_split_survivor_sets_abort_the_round(federation, tmp_path, monkeypatch):
    """The server tells shard 0 that everyone survived and shard 1 that client 0 dropped
    (with both, client 0's self-mask seed and mask key would be revealed)."""
    confirm = stages.confirm_survivors

    def splitting_confirm(config, plan_path, shard, message_paths, out_path):
        if shard == 1:
            (path,) = message_paths
            records = _records(Path(path))
            for record in records:
                if record["step"] == "unmask_request":
                    (request,) = record["messages"]
                    request["survivors"] = [c for c in request["survivors"] if c != 0]
                    request["dropped"] = sorted({*request["dropped"], 0})
            split = Path(path).with_name("secagg_unmask_request_split.json")
            split.write_text(json.dumps(records))
            message_paths = [split]
        return confirm(config, plan_path, shard, message_paths, out_path)

    monkeypatch.setattr(stages, "confirm_survivors", splitting_confirm)
    run = tmp_path / "run"
    with pytest.raises(InconsistentView, match="different survivor sets"):
        simulate(_agents_config(federation, tmp_path), run, register=False)
    # Each shard signed the request it was sent; the confirmations disagree.
    confirmed = {
        m["client_id"]: tuple(m["request"]["dropped"])
        for s in (0, 1)
        for r in _records(run / "round_001" / f"secagg_confirm_{s}.json")
        for m in r["messages"]
    }
    assert confirmed == {0: (), 1: (), 2: (0,), 3: (0,)}
    _assert_nothing_unmasked(run)
