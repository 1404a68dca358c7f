"""What an agent does for each task: the same per-client library code the simulated
clients run (fedpipe.clients.runtime.InProcessClients: training, the aggregation chain's
client part, each secure-aggregation step), on the agent's own data and with secrets from
the OS's cryptographic source that never leave the agent.

A task is (kind, meta, files) and its answer (meta, files); see `run`. The agent's
protocol state (its SecAgg entropy for a session and its journal: the request it
confirmed and the one it answered) is kept in a client state store under its state
directory (fedpipe.secagg.client_state), so a restarted agent can finish a round it began
and still refuses a second, conflicting request. It signs its advertisements and
confirmations with the identity its certificate binds (fedpipe.agents.identity) and trusts
only keys that the federation CA certified: the consistency check holds against an active
coordinator or pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedpipe import config as run_config
from fedpipe import secagg
from fedpipe.agents.identity import AgentIdentity
from fedpipe.artifacts import wire
from fedpipe.artifacts.round_plan import Cohort, RoundPlan
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.clients.runtime import InProcessClients
from fedpipe.data.datasets import Dataset
from fedpipe.privacy.randomness import Randomness
from fedpipe.secagg import rounds as sa
from fedpipe.secagg.client_state import ClientState

KINDS = ("ping", "advertise", "share_keys", "train", "confirm", "unmask")
# The kinds that need neither the data nor a model (an echo, the SecAgg protocol steps):
# the agent answers them itself, without its worker, even while the worker trains.
NO_DATA = ("ping", "advertise", "share_keys", "confirm", "unmask")
_ANSWERS = {"share_keys": "key_shares", "confirm": "confirmation", "unmask": "response"}


@dataclasses.dataclass
class AgentContext:
    """What a task may use: the agent's identity, its data and its private state dir."""

    client_id: int
    x: np.ndarray
    y: np.ndarray
    state_dir: Path
    credentials: tuple[str, str, str] | None = None  # certificate, its key, the CA (paths)

    @functools.cached_property
    def identity(self) -> AgentIdentity:
        if self.credentials is None:
            raise ValueError(f"client {self.client_id} has no credentials to sign with")
        return AgentIdentity.load(self.client_id, *self.credentials)

    def client_data(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        if client_id != self.client_id:
            raise ValueError(f"agent {self.client_id} holds no data of client {client_id}")
        return self.x, self.y

    def secagg_client(
        self,
        session: secagg.Session,
        client_id: int,
        messages: sa.Messages | None = None,
        *,
        advertising: bool = False,
    ) -> secagg.SecAggClient:
        """The agent's SecAgg client (a rounds.ClientFactory): entropy always from the
        OS (never from the run's config), its certificate's identity, and the signing
        keys the CA certified in the advertisements it was sent."""
        state = ClientState(self.state_dir / "secagg", client_id)
        fresh = Randomness().token_bytes(32) if advertising else None
        ads = messages.advertisements if messages else []
        return state.client(
            session,
            fresh,
            identity=self.identity.key,
            directory=self.identity.directory(ads),
        )

    def runtime(
        self, config: run_config.RunConfig, trainer: Callable[[], Any] | None = None
    ) -> InProcessClients:
        """The agent as a runtime of one in-process client: itself (the protocol steps
        need no trainer; training passes its own)."""
        return InProcessClients(
            config,
            self,
            trainer or _no_trainer,
            state_dir=self.state_dir,
            secagg_client=self.secagg_client,
        )


def _no_trainer() -> Any:
    raise RuntimeError("a secure-aggregation protocol step does not train")


def run(
    ctx: AgentContext, kind: str, meta: dict[str, Any], files: dict[str, bytes]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Run one task; raises on anything the agent refuses to do (the error is reported)."""
    if kind == "ping":
        return {"client_id": ctx.client_id, "received_bytes": sum(map(len, files.values()))}, {
            "echo": files.get("echo", b"")
        }
    config = _config(meta["config"])
    if kind == "train":
        return _train(ctx, config, meta, files)
    cohort = Cohort(**meta["cohort"])
    session = _session(meta["config"], json.dumps(meta["cohort"]), int(meta["model_size"]))
    runtime = ctx.runtime(config)
    if kind == "advertise":
        ad = runtime.advertise_one(session, ctx.client_id)
        ad = dataclasses.replace(ad, certificate=ctx.identity.certificate_pem)
        return {"advertisement": ad.to_dict()}, {}
    if kind not in _ANSWERS:
        raise ValueError(f"unknown task kind {kind!r} (known: {', '.join(KINDS)})")
    messages = _messages(files["transcript"], cohort.round_number)
    step = getattr(runtime, f"{kind}_one")
    return {_ANSWERS[kind]: step(session, ctx.client_id, messages).to_dict()}, {}


def _train(
    ctx: AgentContext, config: run_config.RunConfig, meta: dict[str, Any], files: dict[str, bytes]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Local training from the round plan's global weights, then the chain's client part;
    under secure aggregation the answer is the masked input, never the update itself."""
    plan = _plan(files["plan"])
    model_trainer = _trainer(
        meta["config"],
        ctx.x,
        ctx.y,
        int(meta["num_features"]),
        int(meta["num_classes"]),
        _shape(meta.get("image_shape")),
    )
    with tempfile.TemporaryDirectory() as tmp:
        transcript = []
        if "transcript" in files:
            transcript = [Path(tmp) / "transcript.json"]
            transcript[0].write_bytes(files["transcript"])
        sent = ctx.runtime(config, lambda: model_trainer).updates(plan, [ctx.client_id], transcript)
    if not sent:
        raise ValueError(f"client {ctx.client_id} withholds its update this round")
    (update,) = sent
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
def _config(config_json: str) -> run_config.RunConfig:
    """A run's config, parsed once per worker: every task of a run carries the same text,
    and parsing it (type hints evaluated per section) costs more than a protocol step."""
    return run_config.from_json(config_json)


@functools.lru_cache(maxsize=2)
def _session(config_json: str, cohort_json: str, model_size: int) -> secagg.Session:
    """A round's session, derived once for the round's protocol steps (its neighbour
    graph costs milliseconds)."""
    return sa.session_for(_config(config_json), Cohort(**json.loads(cohort_json)), model_size)


@functools.lru_cache(maxsize=2)
def _cached_trainer(config_json: str, features: int, num_classes: int, image_shape):
    from fedpipe.training import trainer

    config = _config(config_json)
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
