"""The pipeline's side of client agents: the client-side stages (advertise keys, share
keys, local train, unmask response) send their shard's work through the coordinator to
the shard's agents and write the same artifacts the simulated clients write, so the
server-side stages (relay, request unmasking, aggregate) run unchanged.

An agent that does not answer before the task deadline is treated as a client that
dropped: missing from that step's messages (SecAgg recovers it from the others' shares
when it dropped after sharing keys) and counted against the quorum.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from fedpipe.agents import client_tasks, transport
from fedpipe.agents import protocol_pb2 as pb
from fedpipe.agents import protocol_pb2_grpc as pb_grpc
from fedpipe.artifacts.round_plan import Cohort, RoundPlan
from fedpipe.artifacts.updates import save_shard
from fedpipe.config import RunConfig
from fedpipe.secagg import KeyAdvertisement, KeyShares, UnmaskResponse
from fedpipe.secagg import rounds as sa


@dataclasses.dataclass(frozen=True)
class Settings:
    address: str
    tls_dir: str  # holds ca.pem, orchestrator.pem, orchestrator.key
    task_timeout_s: float


def settings(config: RunConfig) -> Settings | None:
    """The one place the run config's agent fields are read (None: simulated clients)."""
    if config.clients.runtime != "agents":
        return None
    return Settings(
        str(config.clients.coordinator),
        str(config.clients.tls_dir),
        float(config.clients.task_timeout_s),
    )


def enabled(config: RunConfig) -> bool:
    return settings(config) is not None


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
        if s is None:
            raise ValueError("clients is not 'agents' in this config")
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
        started = time.perf_counter()
        payload = transport.pack(files)
        task = pb.Task(
            task_id=uuid.uuid4().hex,
            client_id=client_id,
            kind=kind,
            meta_json=json.dumps(meta).encode(),
            payload_size=len(payload),
            payload_sha256=transport.digest(payload),
            deadline=time.time() + self.task_timeout_s,
        )
        try:
            result, answer = transport.collect(
                self.stub.Dispatch(
                    transport.task_stream(task, payload), timeout=self.task_timeout_s + 30
                ),
                "result",
            )
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
            transport.unpack(answer) if result.ok else {},
            seconds,
            len(payload),
            len(answer),
        )

    def dispatch_all(
        self, client_ids: Sequence[int], kind: str, meta: dict[str, Any], files: dict[str, bytes]
    ) -> list[Reply]:
        """The same task to several agents at once; replies in client order."""
        if not client_ids:
            return []
        with futures.ThreadPoolExecutor(max_workers=min(32, len(client_ids))) as pool:
            return list(pool.map(lambda c: self.dispatch(c, kind, meta, files), client_ids))


# -- the client-side stages, through agents ---------------------------------------------


def _task_meta(config: RunConfig, cohort: Cohort) -> dict[str, Any]:
    return {
        "config": config.to_json(),
        "round_key": f"{cohort.started_at}/{cohort.round_number}",
        "cohort": dataclasses.asdict(cohort),
    }


def _transcript(paths: Sequence[str | Path]) -> bytes:
    return json.dumps([r for p in paths for r in json.loads(Path(p).read_text())]).encode()


def _answered(replies: list[Reply], step: str, round_number: int) -> list[Reply]:
    """The replies that carry an answer; the silent or failed agents are reported."""
    for r in replies:
        if not r.ok:
            print(
                f"round {round_number}: client {r.client_id} gave no {step} ({r.error})", flush=True
            )
    return [r for r in replies if r.ok]


def _clients(plan: RoundPlan, shard: int) -> list[int]:
    return [] if plan.cohort.stopped else list(plan.cohort.shards[shard])


def advertise_keys(config: RunConfig, plan_path: str | Path, shard: int, out: str | Path) -> None:
    plan = RoundPlan.load(plan_path)
    meta = {**_task_meta(config, plan.cohort), "model_size": plan.spec.size}
    with RemoteClients.for_config(config) as remote:
        replies = remote.dispatch_all(_clients(plan, shard), "advertise", meta, {})
    n = plan.cohort.round_number
    ok = _answered(replies, "key advertisement", n)
    ads = [KeyAdvertisement.from_dict(r.meta["advertisement"]) for r in ok]
    _check_senders(ads, ok)
    sa.save_messages(out, "advertise", n, ads, {r.client_id: r.seconds for r in ok})


def share_keys(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    advertisement_paths: Sequence[str | Path],
    out: str | Path,
) -> None:
    plan = RoundPlan.load(plan_path)
    meta = {**_task_meta(config, plan.cohort), "model_size": plan.spec.size}
    files = {"transcript": _transcript(advertisement_paths)}
    with RemoteClients.for_config(config) as remote:
        replies = remote.dispatch_all(_clients(plan, shard), "share_keys", meta, files)
    n = plan.cohort.round_number
    ok = _answered(replies, "key shares", n)
    shares = [KeyShares.from_dict(r.meta["key_shares"]) for r in ok]
    _check_senders(shares, ok)
    sa.save_messages(out, "share_keys", n, shares, {r.client_id: r.seconds for r in ok})


def local_train(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    updates_path: str | Path,
    secagg_messages: Sequence[str | Path] = (),
) -> None:
    """Each agent of the shard trains on its own data; under secure aggregation it
    answers with its masked input only."""
    from fedpipe.data import datasets

    plan = RoundPlan.load(plan_path)
    data = datasets.load(config)  # the server's data: only the model's shape is used
    meta = {
        **_task_meta(config, plan.cohort),
        "num_features": data.num_features,
        "num_classes": data.num_classes,
        "image_shape": list(data.image_shape) if data.image_shape else None,
    }
    files = {"plan": Path(plan_path).read_bytes()}
    if sa.enabled(config):
        files["transcript"] = _transcript(secagg_messages)
    with RemoteClients.for_config(config) as remote:
        replies = remote.dispatch_all(_clients(plan, shard), "train", meta, files)
    n = plan.cohort.round_number
    updates = []
    for r in _answered(replies, "update", n):
        try:
            updates.append(client_tasks.update_of(r.client_id, r.meta, r.files))
        except (KeyError, ValueError) as e:
            print(f"round {n}: client {r.client_id}'s update is unreadable ({e})", flush=True)
    save_shard(updates_path, n, shard, updates)
    if updates:
        print(
            f"round {n} shard {shard}: agents {', '.join(str(u.client_id) for u in updates)} "
            f"answered in {max(r.seconds for r in replies):.2f}s",
            flush=True,
        )


def unmask_response(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    message_paths: Sequence[str | Path],
    out: str | Path,
) -> None:
    plan = RoundPlan.load(plan_path)
    n = plan.cohort.round_number
    clients = _clients(plan, shard)
    if clients:
        request = sa.load_messages(message_paths, n).request
        clients = [c for c in clients if c in request.survivors]
    meta = {**_task_meta(config, plan.cohort), "model_size": plan.spec.size}
    files = {"transcript": _transcript(message_paths)}
    with RemoteClients.for_config(config) as remote:
        replies = remote.dispatch_all(clients, "unmask", meta, files)
    ok = _answered(replies, "unmask response", n)
    responses = [UnmaskResponse.from_dict(r.meta["response"]) for r in ok]
    _check_senders(responses, ok)
    sa.save_messages(out, "unmask_response", n, responses, {r.client_id: r.seconds for r in ok})


def online_clients(config: RunConfig) -> list[int]:
    """The client ids of the agents that heartbeat now (selection picks among them)."""
    with RemoteClients.for_config(config) as remote:
        return remote.online()


def _check_senders(messages: list, replies: list[Reply]) -> None:
    """A protocol message names its sender; it must be the agent that answered."""
    for m, r in zip(messages, replies, strict=True):
        if m.client_id != r.client_id:
            raise ValueError(f"agent {r.client_id} answered with a message of client {m.client_id}")
