"""What an agent does for each task: the same per-client library code the simulated
clients run (fedpipe.training.trainer for local training, fedpipe.secagg's client steps),
on the agent's own data and with secrets from the OS's cryptographic source that never
leave the agent.

A task is (kind, meta, files) and its answer (meta, files); see `run`. The agent's
protocol state (its SecAgg entropy for a round and which unmasking request it answered)
is kept under its state directory, so a restarted agent can finish a round it began and
still refuses a second, conflicting request.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedpipe import config as run_config
from fedpipe import secagg
from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import ClientContext
from fedpipe.artifacts import wire
from fedpipe.artifacts.round_plan import Cohort, RoundPlan
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.data.datasets import Dataset
from fedpipe.secagg import rounds as sa

KINDS = ("ping", "advertise", "share_keys", "train", "unmask")
TRANSPORT_ONLY = ("ping",)  # an echo of its payload: checks the path, touches no data


@dataclasses.dataclass
class AgentContext:
    """What a task may use: the agent's identity, its data and its private state dir."""

    client_id: int
    x: np.ndarray
    y: np.ndarray
    state_dir: Path


def run(
    ctx: AgentContext, kind: str, meta: dict[str, Any], files: dict[str, bytes]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Run one task; raises on anything the agent refuses to do (the error is reported)."""
    if kind == "ping":
        return {"client_id": ctx.client_id, "received_bytes": sum(map(len, files.values()))}, {
            "echo": files.get("echo", b"")
        }
    config = run_config.from_json(meta["config"])
    if kind == "train":
        return _train(ctx, config, meta, files)
    cohort = Cohort(**meta["cohort"])
    session = sa.session_for(config, cohort, int(meta["model_size"]))
    state = SecAggState(ctx.state_dir, cohort)
    client = state.client(session, ctx.client_id)
    if kind == "advertise":
        return {"advertisement": client.advertise().to_dict()}, {}
    messages = _messages(files["transcript"], cohort.round_number)
    if kind == "share_keys":
        return {"key_shares": client.share_keys(messages.advertisements).to_dict()}, {}
    if kind == "unmask":
        client.share_keys(messages.advertisements)
        client.receive_shares(sa.inbox_of(session, messages, ctx.client_id))
        request = messages.request
        digest = hashlib.sha256(json.dumps(request.to_dict(), sort_keys=True).encode()).hexdigest()
        state.check_unmask(digest)  # before answering: a second, different request is refused
        response = client.unmask(request)
        return {"response": response.to_dict()}, {}
    raise ValueError(f"unknown task kind {kind!r} (known: {', '.join(KINDS)})")


def _train(
    ctx: AgentContext, config: run_config.RunConfig, meta: dict[str, Any], files: dict[str, bytes]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Local training from the round plan's global weights; under secure aggregation the
    answer is the masked input, never the update itself."""
    started = time.perf_counter()
    plan = _plan(files["plan"])
    round_number = plan.cohort.round_number
    model_trainer = _trainer(
        meta["config"],
        ctx.x,
        ctx.y,
        int(meta["num_features"]),
        int(meta["num_classes"]),
        _shape(meta.get("image_shape")),
    )
    result = model_trainer.train(
        plan.weights,
        ctx.x,
        ctx.y,
        epochs=plan.training.epochs,
        batch_size=plan.training.batch_size,
        learning_rate=plan.training.learning_rate,
        mu=plan.training.fedprox_mu,
        seed=[plan.seed, round_number, ctx.client_id],
    )
    update = ClientUpdate.of(
        ctx.client_id,
        result.delta,
        num_examples=result.num_examples,
        train_loss=result.train_loss,
        duration_s=time.perf_counter() - started,
    )
    if sa.enabled(config):
        session = sa.session_for(config, plan.cohort, plan.spec.size)
        messages = _messages(files["transcript"], round_number)
        client = SecAggState(ctx.state_dir, plan.cohort).client(session, ctx.client_id)
        client.share_keys(messages.advertisements)
        client.receive_shares(sa.inbox_of(session, messages, ctx.client_id))
        chain = build_chain(config)
        client_ctx = ClientContext.for_update(plan, update, secure=True, state_dir=ctx.state_dir)
        encoded = session.encoding.encode(
            update.vector,
            chain.weighting.secure_weight(client_ctx, session.encoding.max_examples),
            lambda delta: chain.client_update(delta, client_ctx)[0],
        )
        vector = client.masked_input(encoded).vector
        update = ClientUpdate.of(
            ctx.client_id,
            vector,
            num_examples=0,  # it travels inside the masked vector
            train_loss=update.train_loss,
            duration_s=time.perf_counter() - started,
            encoding=sa.ENCODING,
        )
    answer = {
        "num_examples": update.num_examples,
        "train_loss": update.train_loss,
        "duration_s": update.duration_s,
        "encoding": update.encoding,
        "dtype": str(update.vector.dtype),
        "checksum": update.checksum,
    }
    return answer, {"vector": update.vector.tobytes()}


def update_of(client_id: int, meta: dict[str, Any], files: dict[str, bytes]) -> ClientUpdate:
    """The pipeline side: the ClientUpdate an agent's train answer describes."""
    vector = np.frombuffer(files["vector"], dtype=np.dtype(meta["dtype"])).copy()
    if wire.checksum(vector) != meta["checksum"]:
        raise ValueError(f"client {client_id}: update checksum mismatch")
    return ClientUpdate(
        client_id,
        vector,
        num_examples=int(meta["num_examples"]),
        train_loss=float(meta["train_loss"]),
        duration_s=float(meta["duration_s"]),
        checksum=meta["checksum"],
        encoding=meta["encoding"],
    )


class SecAggState:
    """One round's SecAgg secrets of this agent, in a 0600 file under its state dir: 32
    bytes of entropy from os.urandom (every key, mask seed and share derives from it) and
    the digest of the one unmasking request it answered."""

    def __init__(self, state_dir: Path, cohort: Cohort) -> None:
        key = json.dumps(dataclasses.asdict(cohort), sort_keys=True).encode()
        folder = Path(state_dir) / "secagg"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / f"round-{cohort.round_number}-{hashlib.sha256(key).hexdigest()[:24]}"

    def _read(self) -> dict[str, Any]:
        if self.path.exists():
            return json.loads(self.path.read_text())
        state = {"entropy": os.urandom(32).hex(), "answered": None}
        self._write(state)
        return state

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def client(self, session: secagg.Session, client_id: int) -> secagg.SecAggClient:
        return secagg.SecAggClient(session, client_id, bytes.fromhex(self._read()["entropy"]))

    def check_unmask(self, request_digest: str) -> None:
        """Record the request about to be answered; refuse one that differs from the one
        answered before (the same request again, from a retried task, is answered again)."""
        state = self._read()
        if state["answered"] not in (None, request_digest):
            raise secagg.UnsafeRequest(
                "this agent already answered a different unmasking request this round"
            )
        state["answered"] = request_digest
        self._write(state)


def _messages(transcript: bytes, round_number: int) -> sa.Messages:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transcript.json"
        path.write_bytes(transcript)
        return sa.load_messages([path], round_number)


def _plan(data: bytes) -> RoundPlan:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.npz"
        path.write_bytes(data)
        return RoundPlan.load(path)


def _shape(value: list[int] | None) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if value else None


@functools.lru_cache(maxsize=2)
def _cached_trainer(config_json: str, features: int, num_classes: int, image_shape):
    from fedpipe.training import trainer

    config = run_config.from_json(config_json)
    shape_only = np.zeros((0, features), np.float32)
    data = Dataset(
        shape_only,
        np.zeros(0, np.int64),
        shape_only,
        np.zeros(0, np.int64),
        num_classes,
        image_shape,
    )
    return trainer.Trainer(config, data)


def _trainer(
    config_json: str, x: np.ndarray, y: np.ndarray, features: int, num_classes: int, image_shape
):
    """The agent's trainer for a run's model, built from the model's shape alone: it never
    loads the run's dataset (the server's), only trains on the agent's x, y."""
    if x.shape[1] != features:
        raise ValueError(f"local data has {x.shape[1]} features, the model takes {features}")
    if y.size and int(y.max()) >= num_classes:
        raise ValueError(f"local labels go up to {int(y.max())}, the model has {num_classes}")
    return _cached_trainer(config_json, features, num_classes, image_shape)
