"""Issue 12's audit: under SecAgg+ with the clients as agent processes, nothing the
coordinator, the pipeline's side or MLflow stored or logged holds a client's individual
update, in any form the scanner (tests/leak_scan.py) knows.

In privacy.mode reproducible-simulation each client's true update is recomputed here, as
the agent computes it (the trainer from the round's plan, the client's own data, the
per-client seed; then the fixed-point words it masks). Then everything is scanned; a
planted copy of one update shows that the scan finds what it looks for.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fedpipe.agents import data_folder
from fedpipe.agents.local import LocalFederation
from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import ClientContext
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.ops import tracking
from fedpipe.secagg import rounds as sa
from fedpipe.simulation.runner import simulate
from tests import leak_scan

pytestmark = pytest.mark.pipeline

ROUNDS = 2

_opened: list[str] = []
_auditing = False


def _audit(event: str, args: tuple) -> None:
    if _auditing and event == "open" and isinstance(args[0], str | Path):
        _opened.append(str(args[0]))


def _true_updates(config, run: Path, owners: Path) -> dict[int, list[tuple]]:
    """Each round's (client, delta, words, encoding), recomputed the way the agents compute
    them."""
    from fedpipe.training import trainer

    model_trainer = trainer.Trainer(config)
    chain = build_chain(config)
    updates = {}
    for n in range(1, ROUNDS + 1):
        updates[n] = []
        plan = RoundPlan.load(run / f"round_{n:03d}" / "plan.npz")
        session = sa.session_for(config, plan.cohort, plan.spec.size)
        for c in plan.cohort.clients:
            x, y = data_folder.load(str(owners / f"client-{c}"))
            result = model_trainer.train(
                plan.weights,
                x,
                y,
                epochs=plan.training.epochs,
                batch_size=plan.training.batch_size,
                learning_rate=plan.training.learning_rate,
                mu=plan.training.fedprox_mu,
                seed=[plan.seed, n, c],
            )
            update = ClientUpdate.of(
                c,
                result.delta,
                num_examples=result.num_examples,
                train_loss=result.train_loss,
                duration_s=0.0,
            )
            with tempfile.TemporaryDirectory() as state:
                ctx = ClientContext.for_update(plan, update, secure=True, state_dir=Path(state))
                words = session.encoding.encode(
                    update.vector,
                    chain.weighting.secure_weight(ctx, session.encoding.max_examples),
                    lambda delta, ctx=ctx: chain.client_update(delta, ctx)[0],
                )
            updates[n].append((c, result.delta, words, session.encoding))
    return updates


def _mlflow_records(uri: str, out: Path) -> Path:
    """Everything MLflow's API returns about the run (runs, params, metrics with their
    history, tags, registered models and versions), as JSON files to scan."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    out.mkdir()
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            history = {
                key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
                for key in run.data.metrics
            }
            record = {
                "info": dict(run.info),
                "params": run.data.params,
                "metrics": run.data.metrics,
                "metric_history": history,
                "tags": run.data.tags,
            }
            (out / f"run-{run.info.run_id}.json").write_text(json.dumps(record, default=str))
    models = []
    for model in client.search_registered_models():
        models.append({"name": model.name, "tags": model.tags, "description": model.description})
        for version in client.search_model_versions(f"name='{model.name}'"):
            models.append(dict(version))
    (out / "registry.json").write_text(json.dumps(models, default=str))
    return out


def test_nothing_the_coordinator_pipeline_or_mlflow_stored_holds_an_update(
    tmp_path, monkeypatch, agents_config
):
    global _auditing
    owners = tmp_path / "owners"
    mlflow_dir, run, pipeline_tmp = tmp_path / "mlflow", tmp_path / "run", tmp_path / "tmp"
    mlflow_dir.mkdir()
    pipeline_tmp.mkdir()
    config = agents_config(
        f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        {
            "training.rounds": ROUNDS,
            "privacy.mode": "reproducible-simulation",
            "tracking.registered_model_name": "fedpipe-agents-audit",
        },
    )
    data_folder.prepare(config, owners)
    num_clients = config.data.num_clients
    fed = LocalFederation(tmp_path / "federation", num_clients, heartbeat_interval_s=0.5)
    with fed:
        # The coordinator and the pipeline's side write their temporary files where the
        # scan looks; the agents keep theirs elsewhere.
        monkeypatch.setenv("TMPDIR", str(pipeline_tmp))
        monkeypatch.setattr(tempfile, "tempdir", None)
        fed.start_coordinator()
        monkeypatch.setenv("TMPDIR", str(tmp_path / "agents-tmp"))
        (tmp_path / "agents-tmp").mkdir()
        for c in range(num_clients):
            fed.start_agent(c, owners / f"client-{c}")
        monkeypatch.setenv("TMPDIR", str(pipeline_tmp))
        fed.wait_online(range(num_clients), timeout_s=300)
        remote = config.replace(fed.run_config(task_timeout_s=300.0))
        assert str(owners) not in remote.to_json()
        sys.addaudithook(_audit)
        _auditing = True
        try:
            result = simulate(remote, run, register=True)
        finally:
            _auditing = False
    assert result.accuracy[-1] > result.accuracy[0]
    assert result.registration is not None
    assert not [p for p in _opened if p.startswith(str(owners))]
    # A client's loss rides in its masked vector: MLflow has the cohort's mean, no client's.
    logged = tracking.client(config).get_run(result.mlflow_run_id).data.metrics
    assert "train_loss" in logged
    assert not [k for k in logged if k.startswith("per_client/train_loss/")]

    updates = _true_updates(config, run, owners)
    needles = []
    for n, clients in updates.items():
        # The recomputed updates are the agents' own: their words sum (mod 2^bits) to the
        # aggregate the pipeline applied to the round's model.
        encoding = clients[0][3]
        words = [w for _, _, w, _ in clients]
        mean, _ = encoding.decode_mean(np.sum(words, axis=0, dtype=words[0].dtype))
        before = RoundPlan.load(run / f"round_{n:03d}" / "plan.npz").weights
        after = GlobalModel.load(run / f"round_{n:03d}" / "model.npz").weights
        np.testing.assert_allclose(after - before, mean, atol=1e-5)
        for c, delta, words, _ in clients:
            needles += leak_scan.needles_of(f"round {n} client {c}", delta, words, encoding.scale)

    federation = fed.root
    pipeline_side = [
        run,
        pipeline_tmp,
        mlflow_dir,
        fed.coordinator_log,
        federation / "coordinator-state",
        federation / "tls",
        _mlflow_records(config.tracking.uri, tmp_path / "mlflow-api"),
    ]
    assert not leak_scan.scan(pipeline_side, needles)

    # Positive control: the same scan over the same places finds one planted update, in
    # each form a careless component might store it.
    delta = needles[0].vector
    words = needles[1].vector
    np.savez_compressed(run / "planted_fp16.npz", delta=delta.astype(np.float16))
    (pipeline_tmp / "planted_words.json").write_text(json.dumps({"w": words.tolist()}))
    (federation / "coordinator-state").mkdir(exist_ok=True)
    log = os.urandom(1001) + delta.tobytes() + os.urandom(999)
    (federation / "coordinator-state" / "planted.bin").write_bytes(log)
    found = leak_scan.scan(pipeline_side, needles)
    assert set(found) == {
        str(run / "planted_fp16.npz"),
        str(pipeline_tmp / "planted_words.json"),
        str(federation / "coordinator-state" / "planted.bin"),
    }
    assert needles[0].label in found[str(run / "planted_fp16.npz")]
    assert needles[1].label in found[str(pipeline_tmp / "planted_words.json")]
    assert needles[0].label in found[str(federation / "coordinator-state" / "planted.bin")]
