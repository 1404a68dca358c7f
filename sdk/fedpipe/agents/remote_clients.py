"""The pipeline's side of client agents: `AgentClients`, the client runtime
(fedpipe.clients.runtime.ClientRuntime) whose clients are agents at the data owners. Each
client-side step (advertise keys, share keys, local train, confirm, unmask response) is
sent through the coordinator to the shard's agents, and their answers come back as the
same messages and updates the simulated clients give, so the stages and the server side
(relay, request unmasking, aggregate) are the same for both.

An agent that does not answer before the task deadline is treated as a client that
dropped: missing from that step's messages (SecAgg recovers it from the others' shares
when it dropped after sharing keys) and counted against the quorum. An agent that
refuses a step because the protocol was attacked (a substituted key, inconsistent
survivor sets, an unsafe request, a tampered share) aborts the round with that error,
as a simulated client would.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from fedpipe import secagg
from fedpipe.agents import client_tasks, transport
from fedpipe.agents import protocol_pb2 as pb
from fedpipe.agents import protocol_pb2_grpc as pb_grpc
from fedpipe.artifacts.round_plan import Cohort, RoundPlan
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.clients.runtime import Answers
from fedpipe.config import RunConfig
from fedpipe.secagg import KeyAdvertisement, KeyShares, SurvivorConfirmation, UnmaskResponse
from fedpipe.secagg import rounds as sa


@dataclasses.dataclass(frozen=True)
class Settings:
    address: str
    tls_dir: str  # holds ca.pem, orchestrator.pem, orchestrator.key
    task_timeout_s: float


def settings(config: RunConfig) -> Settings:
    """The one place the run config's agent fields are read."""
    return Settings(
        str(config.clients.coordinator),
        str(config.clients.tls_dir),
        float(config.clients.task_timeout_s),
    )


@dataclasses.dataclass(frozen=True)
class Reply:
    client_id: int
    ok: bool
    error: str
    meta: dict[str, Any]
    files: dict[str, bytes]
    seconds: float
    bytes_sent: int  # task payload to the agent
    bytes_received: int  # answer payload from the agent


class RemoteClients:
    """A connection to the coordinator with the orchestrator's certificate."""

    def __init__(self, address: str, tls_dir: str | Path, task_timeout_s: float = 120.0) -> None:
        tls = Path(tls_dir)
        self.channel = transport.secure_channel(
            address, tls / "orchestrator.pem", tls / "orchestrator.key", tls / "ca.pem"
        )
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        self.task_timeout_s = task_timeout_s

    @classmethod
    def for_config(cls, config: RunConfig) -> RemoteClients:
        s = settings(config)
        return cls(s.address, s.tls_dir, s.task_timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RemoteClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> list[pb.AgentStatus]:
        return list(self.stub.Status(pb.StatusRequest(), timeout=10).agents)

    def online(self) -> list[int]:
        return sorted(a.client_id for a in self.status() if a.online)

    def dispatch(
        self, client_id: int, kind: str, meta: dict[str, Any], files: dict[str, bytes]
    ) -> Reply:
        """One task to one agent, waiting for its answer until the task deadline."""
        payload = transport.pack(files)
        return self._send(
            client_id, kind, json.dumps(meta).encode(), payload, transport.digest(payload)
        )

    def _send(
        self, client_id: int, kind: str, meta_json: bytes, payload: bytes, sha256: bytes
    ) -> Reply:
        started = time.perf_counter()
        task = pb.Task(
            task_id=uuid.uuid4().hex,
            client_id=client_id,
            kind=kind,
            meta_json=meta_json,
            payload_size=len(payload),
            payload_sha256=sha256,
            deadline=time.time() + self.task_timeout_s,
        )
        try:
            result, answer = transport.collect(
                self.stub.Dispatch(
                    transport.task_stream(task, payload), timeout=self.task_timeout_s + 30
                ),
                "result",
            )
            files = transport.unpack(answer) if result is not None and result.ok else {}
        except (grpc.RpcError, transport.PayloadError) as e:
            error = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else str(e)
            return Reply(
                client_id, False, error, {}, {}, time.perf_counter() - started, len(payload), 0
            )
        seconds = time.perf_counter() - started
        if result is None:
            return Reply(client_id, False, "no answer", {}, {}, seconds, len(payload), 0)
        return Reply(
            client_id,
            result.ok,
            result.error,
            json.loads(result.meta_json or b"{}"),
            files,
            seconds,
            len(payload),
            len(answer),
        )

    def dispatch_all(
        self, client_ids: Sequence[int], kind: str, meta: dict[str, Any], files: dict[str, bytes]
    ) -> list[Reply]:
        """The same task to several agents at once; replies in client order. The task is
        encoded once (the round's model is the bulk of a train task's payload)."""
        if not client_ids:
            return []
        meta_json, payload = json.dumps(meta).encode(), transport.pack(files)
        sha256 = transport.digest(payload)
        with futures.ThreadPoolExecutor(max_workers=min(32, len(client_ids))) as pool:
            return list(
                pool.map(lambda c: self._send(c, kind, meta_json, payload, sha256), client_ids)
            )


# -- the client runtime, through agents ------------------------------------------------

# The errors with which an honest agent refuses a step because the protocol was attacked:
# they abort the round (the pipeline's task fails), as they do for simulated clients.
ABORTS: dict[str, type[secagg.ProtocolAbort]] = {
    "SubstitutedKey": secagg.SubstitutedKey,
    "InconsistentView": secagg.InconsistentView,
    "UnsafeRequest": secagg.UnsafeRequest,
    "TamperedShare": secagg.ProtocolAbort,  # its own constructor takes the pair, not a text
}


class AgentClients:
    """The client runtime whose clients are agents, reached through the coordinator."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    @classmethod
    def for_config(cls, config: RunConfig) -> AgentClients:
        return cls(config)

    def _dispatch(
        self, clients: Sequence[int], kind: str, meta: dict[str, Any], files: dict[str, bytes]
    ) -> list[Reply]:
        if not clients:
            return []
        return _connection(self.config).dispatch_all(clients, kind, meta, files)

    def online(self, client_ids: Sequence[int]) -> list[int]:
        """The agents that heartbeat now, among client_ids."""
        online = set(_connection(self.config).online())
        return [c for c in client_ids if c in online]

    def _ask(
        self,
        plan: RoundPlan,
        clients: Sequence[int],
        kind: str,
        message_paths: Sequence[str | Path] | None,
        answer: tuple[str, Any],
        step: str,
    ) -> Answers:
        """One protocol step by each agent: the messages of those that answered."""
        meta = {**_task_meta(self.config, plan.cohort), "model_size": plan.spec.size}
        files = {} if message_paths is None else {"transcript": _transcript(message_paths)}
        replies = _answered(
            self._dispatch(clients, kind, meta, files), step, plan.cohort.round_number
        )
        key, cls = answer
        messages = [cls.from_dict(r.meta[key]) for r in replies]
        _check_senders(messages, replies)
        return Answers(messages, {r.client_id: r.seconds for r in replies})

    def advertise(self, plan: RoundPlan, clients: Sequence[int]) -> Answers:
        advertisement = ("advertisement", KeyAdvertisement)
        return self._ask(plan, clients, "advertise", None, advertisement, "key advertisement")

    def share_keys(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        shares = ("key_shares", KeyShares)
        return self._ask(plan, clients, "share_keys", message_paths, shares, "key shares")

    def confirm(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        confirmation = ("confirmation", SurvivorConfirmation)
        return self._ask(
            plan, clients, "confirm", message_paths, confirmation, "survivor confirmation"
        )

    def unmask(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        response = ("response", UnmaskResponse)
        return self._ask(plan, clients, "unmask", message_paths, response, "unmask response")

    def updates(
        self, plan: RoundPlan, clients: Sequence[int], secagg_messages: Sequence[str | Path]
    ) -> list[ClientUpdate]:
        """Each agent trains on its own data; under secure aggregation it answers with its
        masked input only."""
        from fedpipe.data import datasets

        if not clients:
            return []
        data = datasets.load(self.config)  # the server's data: only the model's shape is used
        meta = {
            **_task_meta(self.config, plan.cohort),
            "num_features": data.num_features,
            "num_classes": data.num_classes,
            "image_shape": list(data.image_shape) if data.image_shape else None,
        }
        with tempfile.TemporaryDirectory() as tmp:
            plan.save(Path(tmp) / "plan.npz")
            files = {"plan": (Path(tmp) / "plan.npz").read_bytes()}
        if sa.enabled(self.config):
            files["transcript"] = _transcript(secagg_messages)
        n = plan.cohort.round_number
        updates = []
        for r in _answered(self._dispatch(clients, "train", meta, files), "update", n):
            try:
                updates.append(client_tasks.update_of(r.client_id, r.meta, r.files))
            except (KeyError, ValueError) as e:
                print(f"round {n}: client {r.client_id}'s update is unreadable ({e})", flush=True)
        return updates


_connections: dict[Settings, RemoteClients] = {}
_connections_lock = threading.Lock()


def _connection(config: RunConfig) -> RemoteClients:
    """This process's connection to the run's coordinator, opened on first use and kept
    for the run's later steps (a TLS handshake per step cost more than a protocol step's
    messages); closed when the process exits."""
    s = settings(config)
    with _connections_lock:
        if s not in _connections:
            if not _connections:
                atexit.register(_close_connections)
            _connections[s] = RemoteClients(s.address, s.tls_dir, s.task_timeout_s)
        return _connections[s]


def _close_connections() -> None:
    with _connections_lock:
        for remote in _connections.values():
            remote.close()
        _connections.clear()


@functools.lru_cache(maxsize=4)
def _config_json(config: RunConfig) -> str:
    """Every task of a run carries the run's config: serialised once per process."""
    return config.to_json()


def _task_meta(config: RunConfig, cohort: Cohort) -> dict[str, Any]:
    return {
        "config": _config_json(config),
        "round_key": f"{cohort.started_at}/{cohort.round_number}",
        "cohort": dataclasses.asdict(cohort),
    }


def _transcript(paths: Sequence[str | Path]) -> bytes:
    return json.dumps([r for p in paths for r in json.loads(Path(p).read_text())]).encode()


def _answered(replies: list[Reply], step: str, round_number: int) -> list[Reply]:
    """The replies that carry an answer; the silent or failed agents are reported, and an
    agent's refusal of an attacked protocol step aborts the round."""
    for r in replies:
        if not r.ok:
            name, _, detail = r.error.partition(": ")
            if name in ABORTS:
                raise ABORTS[name](f"agent {r.client_id} refused its {step} ({name}): {detail}")
            print(
                f"round {round_number}: client {r.client_id} gave no {step} ({r.error})", flush=True
            )
    return [r for r in replies if r.ok]


def _check_senders(messages: list, replies: list[Reply]) -> None:
    """A protocol message names its sender; it must be the agent that answered."""
    for m, r in zip(messages, replies, strict=True):
        if m.client_id != r.client_id:
            raise ValueError(f"agent {r.client_id} answered with a message of client {m.client_id}")
