"""The coordinator: the one service both sides dial. Agents (client certificates) register,
heartbeat, fetch tasks and submit results; the pipeline's tasks (the orchestrator's
certificate) read the agents' status and dispatch tasks.

It authenticates every call by the certificate the TLS handshake verified (its CN names
the client), refuses messages whose claimed sender differs from that certificate, and
rejects replayed or stale ones: each agent numbers its messages with increasing sequence
numbers; a number seen before (within the window), or not above the last one persisted
before a coordinator restart, is a replay, and a send time outside the window is stale.
An agent's calls overlap (a heartbeat while a result streams), so numbers may arrive out
of order; each is accepted once. It keeps payloads only in memory while a task is in flight and
stores nothing of them: no raw data, no client secret.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc

from fedpipe.agents import protocol_pb2 as pb
from fedpipe.agents import protocol_pb2_grpc as pb_grpc
from fedpipe.agents import provisioning, transport
from fedpipe.artifacts.files import atomic_write

log = logging.getLogger("fedpipe.coordinator")

ORCHESTRATOR = "orchestrator"
MAX_POLL_S = 30.0
EXPIRED_KEPT = 10_000
LOG_LINES_KEPT = 100_000  # lines of the sequence log before it is compacted


@dataclasses.dataclass
class AgentRecord:
    client_id: int
    registered_at: float = 0.0
    last_heartbeat: float = 0.0
    floor: int = 0  # every sequence at or below it was used before the last restart
    seen: dict[int, float] = dataclasses.field(default_factory=dict)  # sequence -> sent_at
    rounds: set[str] = dataclasses.field(default_factory=set)
    failures: int = 0
    refused: int = 0


@dataclasses.dataclass
class PendingTask:
    task: pb.Task
    payload: bytes
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: pb.Result | None = None
    result_payload: bytes = b""
    delivered: bool = False


class Refused(Exception):
    """A call refused for its caller: the gRPC status code and the reason logged."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Coordinator(pb_grpc.CoordinatorServicer):
    def __init__(
        self,
        *,
        heartbeat_interval_s: float = 1.0,
        heartbeat_timeout_s: float = 15.0,
        clock_window_s: float = 60.0,
        state_dir: str | Path | None = None,
    ) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.clock_window_s = clock_window_s
        self._lock = threading.Lock()
        self._agents: dict[int, AgentRecord] = {}
        self._queues: dict[int, queue.Queue[PendingTask]] = {}
        self._pending: dict[str, PendingTask] = {}
        self._expired: dict[str, int] = {}  # recent finished task ids -> their client
        self._state_file = Path(state_dir) / "sequences.log" if state_dir else None
        self._state_lock = threading.Lock()  # one log write at a time
        self._log: int | None = None  # the log's descriptor, open for appending
        self._log_lines = 0
        self._load_state()

    # -- who is calling -------------------------------------------------------------

    def _caller(self, context: grpc.ServicerContext) -> int | str:
        """The client id (or ORCHESTRATOR) of the certificate the handshake verified."""
        names = context.auth_context().get("x509_common_name", [])
        common_name = names[0].decode() if len(names) == 1 else ""
        if common_name == provisioning.ORCHESTRATOR_CN:
            return ORCHESTRATOR
        client_id = provisioning.client_id_of(common_name)
        if client_id is None:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"certificate CN {common_name!r} names neither a client nor the orchestrator",
            )
        return client_id

    def _agent_call(self, context: grpc.ServicerContext, envelope: pb.Envelope) -> AgentRecord:
        """Check an agent's message: sender = certificate, sent recently, never seen before."""
        caller = self._caller(context)
        if caller == ORCHESTRATOR:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "the orchestrator is not an agent")
        assert isinstance(caller, int)
        with self._lock:
            record = self._agents.setdefault(caller, AgentRecord(caller))
            if envelope.client_id != caller:
                record.refused += 1
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"impersonation: certificate of client {caller} sent a message claiming "
                    f"client {envelope.client_id}",
                )
            skew = time.time() - envelope.sent_at
            if abs(skew) > self.clock_window_s:
                record.refused += 1
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"stale message from client {caller}: sent {skew:.1f}s ago, window "
                    f"{self.clock_window_s:.0f}s",
                )
            if envelope.sequence in record.seen or envelope.sequence <= record.floor:
                record.refused += 1
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"replayed message from client {caller}: sequence {envelope.sequence} "
                    "was used before",
                )
            horizon = time.time() - self.clock_window_s
            record.seen = {q: t for q, t in record.seen.items() if t >= horizon}
            record.seen[envelope.sequence] = envelope.sent_at
        self._save_state(caller, envelope.sequence)
        return record

    def _orchestrator_call(self, context: grpc.ServicerContext) -> None:
        if self._caller(context) != ORCHESTRATOR:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED, "only the orchestrator's certificate may ask"
            )

    # -- agent calls ----------------------------------------------------------------

    def Register(self, request, context):
        with _refusals(context, "Register"):
            record = self._agent_call(context, request.envelope)
            with self._lock:
                now = time.time()
                record.registered_at = record.last_heartbeat = now
                self._queues.setdefault(record.client_id, queue.Queue())
            log.info("client %d registered (agent %s)", record.client_id, request.agent_version)
            return pb.RegisterReply(
                heartbeat_interval_s=self.heartbeat_interval_s,
                heartbeat_timeout_s=self.heartbeat_timeout_s,
            )

    def Heartbeat(self, request, context):
        with _refusals(context, "Heartbeat"):
            record = self._agent_call(context, request.envelope)
            with self._lock:
                record.last_heartbeat = time.time()
            return pb.HeartbeatReply(ok=True)

    def FetchTask(self, request, context):
        with _refusals(context, "FetchTask"):
            record = self._agent_call(context, request.envelope)
            with self._lock:
                record.last_heartbeat = time.time()
                tasks = self._queues.setdefault(record.client_id, queue.Queue())
        wait_until = time.time() + min(max(request.wait_s, 0.0), MAX_POLL_S)
        while context.is_active():
            try:
                pending = tasks.get(timeout=max(0.0, min(1.0, wait_until - time.time())))
            except queue.Empty:
                if time.time() >= wait_until:
                    return
                # An open poll is a heartbeat (a killed agent's connection closes, a hung
                # one's poll ends by wait_until): an idle agent need not send others.
                with self._lock:
                    record.last_heartbeat = time.time()
                continue
            if pending.done.is_set() or time.time() > pending.task.deadline:
                continue  # given up on by its dispatcher
            pending.delivered = True
            yield from transport.task_stream(pending.task, pending.payload)
            return

    def SubmitResult(self, request_iterator, context):
        with _refusals(context, "SubmitResult"):
            try:
                result, payload = transport.collect(request_iterator, "result")
            except transport.PayloadError as e:
                caller = self._caller(context)
                self._count_refusal(caller)
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"result from client {caller}: {e}"
                ) from e
            if result is None:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "an empty result stream")
            record = self._agent_call(context, result.envelope)
            with self._lock:
                pending = self._pending.get(result.task_id)
                if pending is None and self._expired.get(result.task_id) == record.client_id:
                    return pb.Ack(accepted=False, reason="the task's deadline had passed")
                if pending is None or pending.task.client_id != record.client_id:
                    record.refused += 1
                    raise Refused(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"client {record.client_id} answered task {result.task_id!r}, "
                        "which is not a task in flight for it",
                    )
                if pending.done.is_set():
                    return pb.Ack(accepted=False, reason="the task's deadline had passed")
                record.last_heartbeat = time.time()
                round_key = json.loads(pending.task.meta_json or b"{}").get("round_key")
                if result.ok and round_key:
                    record.rounds.add(str(round_key))
                if not result.ok:
                    record.failures += 1
                pending.result, pending.result_payload = result, payload
                pending.done.set()
            if not result.ok:
                log.warning(
                    "client %d failed task %s: %s", record.client_id, result.task_id, result.error
                )
            return pb.Ack(accepted=True)

    # -- orchestrator calls ---------------------------------------------------------

    def Status(self, request, context):
        with _refusals(context, "Status"):
            self._orchestrator_call(context)
            return pb.StatusReply(
                agents=self.status(), heartbeat_timeout_s=self.heartbeat_timeout_s
            )

    def status(self) -> list[pb.AgentStatus]:
        now = time.time()
        with self._lock:
            return [
                pb.AgentStatus(
                    client_id=r.client_id,
                    online=r.registered_at > 0
                    and now - r.last_heartbeat <= self.heartbeat_timeout_s,
                    last_heartbeat=r.last_heartbeat,
                    rounds_served=len(r.rounds),
                    failures=r.failures,
                    registered_at=r.registered_at,
                    refused_messages=r.refused,
                )
                for r in sorted(self._agents.values(), key=lambda r: r.client_id)
            ]

    def Dispatch(self, request_iterator, context):
        with _refusals(context, "Dispatch"):
            self._orchestrator_call(context)
            try:
                task, payload = transport.collect(request_iterator, "task")
            except transport.PayloadError as e:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
            if task is None:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "an empty task stream")
        task_id = task.task_id or uuid.uuid4().hex
        task.task_id = task_id
        pending = PendingTask(task, payload)
        with self._lock:
            self._pending[task_id] = pending
            self._agents.setdefault(task.client_id, AgentRecord(task.client_id))
            self._queues.setdefault(task.client_id, queue.Queue()).put(pending)
        try:
            reason = "deadline passed: the agent stayed silent"
            while not pending.done.wait(timeout=0.2):
                if time.time() > task.deadline or not context.is_active():
                    break
                if self._silent(task.client_id):  # no need to wait for the deadline
                    reason = "the agent went offline (no heartbeat within the timeout)"
                    break
            with self._lock:
                answered = pending.result is not None
                if not answered:
                    pending.done.set()
                    self._agents[task.client_id].failures += 1
            if answered:
                yield from transport.result_stream(pending.result, pending.result_payload)
            else:
                if pending.delivered:
                    reason += " after receiving the task"
                log.warning(
                    "client %d task %s (%s): %s", task.client_id, task_id, task.kind, reason
                )
                yield from transport.result_stream(
                    pb.Result(
                        task_id=task_id,
                        ok=False,
                        error=reason,
                        payload_sha256=transport.digest(b""),
                    ),
                    b"",
                )
        finally:
            with self._lock:
                self._pending.pop(task_id, None)
                self._expired[task_id] = task.client_id
                while len(self._expired) > EXPIRED_KEPT:
                    self._expired.pop(next(iter(self._expired)))

    def _silent(self, client_id: int) -> bool:
        """The agent registered and then stopped heartbeating (an agent never seen is given
        until the deadline: it may be starting)."""
        with self._lock:
            r = self._agents.get(client_id)
            return bool(
                r and r.registered_at and time.time() - r.last_heartbeat > self.heartbeat_timeout_s
            )

    # -- state ----------------------------------------------------------------------

    def _count_refusal(self, caller: int | str) -> None:
        if isinstance(caller, int):
            with self._lock:
                self._agents.setdefault(caller, AgentRecord(caller)).refused += 1

    def _save_state(self, client_id: int, sequence: int) -> None:
        """Persist an accepted sequence number before the call that carried it goes on, so
        a restarted coordinator still rejects replays: one line appended to a log and
        synced (rewriting a whole state file per message cost a disk flush of milliseconds
        and most of the coordinator's CPU), the log compacted now and then."""
        if self._state_file is None:
            return
        with self._state_lock:
            if self._log is None or self._log_lines >= LOG_LINES_KEPT:
                self._compact_log()
            assert self._log is not None
            os.write(self._log, f"{client_id} {sequence}\n".encode())
            os.fdatasync(self._log)
            self._log_lines += 1

    def _compact_log(self) -> None:
        """Rewrite the log as each agent's highest sequence (atomically: a coordinator
        killed meanwhile keeps the old log) and reopen it for appending."""
        assert self._state_file is not None
        with self._lock:
            floors = {c: max([r.floor, *r.seen]) for c, r in self._agents.items()}
        atomic_write(self._state_file, "".join(f"{c} {q}\n" for c, q in floors.items()).encode())
        if self._log is not None:
            os.close(self._log)
        self._log = os.open(self._state_file, os.O_WRONLY | os.O_APPEND)
        self._log_lines = len(floors)

    def _load_state(self) -> None:
        """Each agent's floor: the highest sequence in the log. A line torn by a crash
        mid-append is skipped: its call had not gone on."""
        if self._state_file is None or not self._state_file.exists():
            return
        for line in self._state_file.read_text().splitlines():
            fields = line.split()
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                continue
            client, sequence = int(fields[0]), int(fields[1])
            record = self._agents.setdefault(client, AgentRecord(client))
            record.floor = max(record.floor, sequence)

    def close(self) -> None:
        with self._state_lock:
            if self._log is not None:
                os.close(self._log)
                self._log = None


class _refusals:
    """Turn a Refused into a logged refusal and the caller's gRPC error."""

    def __init__(self, context: grpc.ServicerContext, call: str) -> None:
        self.context, self.call = context, call

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if isinstance(error, Refused):
            log.warning("refused %s from %s: %s", self.call, self.context.peer(), error.reason)
            self.context.abort(error.code, error.reason)
        return False


def serve(
    port: int,
    cert: str | Path,
    key: str | Path,
    ca: str | Path,
    *,
    host: str = "127.0.0.1",
    state_dir: str | Path | None = None,
    heartbeat_interval_s: float = 1.0,
    heartbeat_timeout_s: float = 15.0,
    max_workers: int = 512,
) -> tuple[grpc.Server, Coordinator, int]:
    """Start the coordinator on host:port (0: any free port) over mutual TLS; returns the
    running server, its servicer and the port it listens on."""
    if state_dir is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    coordinator = Coordinator(
        heartbeat_interval_s=heartbeat_interval_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        state_dir=state_dir,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    pb_grpc.add_CoordinatorServicer_to_server(coordinator, server)
    bound = server.add_secure_port(f"{host}:{port}", transport.server_credentials(cert, key, ca))
    if bound == 0:
        raise OSError(f"could not listen on {host}:{port}")
    server.start()
    log.info("coordinator listening on %s:%d (mutual TLS)", host, bound)
    return server, coordinator, bound
