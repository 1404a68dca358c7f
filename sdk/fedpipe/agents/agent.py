"""The client agent: a long-running process at a data owner. It dials out to the
coordinator (outbound connections only), registers, heartbeats, fetches tasks, runs them
on its own data (fedpipe.agents.client_tasks) and returns only what the task's protocol
step allows. Its identity is its certificate; its secrets and protocol state stay under
its state directory (0700).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
from cryptography import x509

from fedpipe.agents import client_tasks, data_folder, provisioning, transport
from fedpipe.agents import protocol_pb2 as pb
from fedpipe.agents import protocol_pb2_grpc as pb_grpc
from fedpipe.artifacts.files import atomic_write

log = logging.getLogger("fedpipe.agent")
VERSION = "1"
POLL_S = 5.0
SEQUENCE_RESERVE_US = 60_000_000


def client_id_from_certificate(cert_path: str | Path) -> int:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    client_id = provisioning.client_id_of(str(names[0].value)) if names else None
    if client_id is None:
        raise ValueError(f"{cert_path}: not a client certificate (CN must be client-<id>)")
    return client_id


class Agent:
    def __init__(
        self,
        data_uri: str,
        coordinator: str,
        cert: str | Path,
        key: str | Path,
        ca: str | Path,
        state_dir: str | Path,
        warm_up: bool = True,
    ) -> None:
        self.client_id = client_id_from_certificate(cert)
        self.warm_up = warm_up
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_dir.chmod(0o700)
        # Fail now, not at the first task, on unreadable data (a remote URI is fetched now).
        data_folder.load(data_uri, self.state_dir)
        credentials = tuple(str(Path(p).resolve()) for p in (cert, key, ca))  # signs with them
        self._worker_args = (
            self.client_id,
            data_uri,
            str(self.state_dir),
            credentials,
            os.getpid(),
        )
        self._worker: futures.ProcessPoolExecutor | None = None
        no_data = np.zeros((0, 0), np.float32)
        self._no_data_context = client_tasks.AgentContext(
            self.client_id, no_data, np.zeros(0, np.int64), self.state_dir, credentials
        )
        self.channel = transport.secure_channel(coordinator, cert, key, ca)
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        self._sequence_file = self.state_dir / "sequence"
        self._sequence = int(self._sequence_file.read_text()) if self._sequence_file.exists() else 0
        self._reserved = self._sequence  # every number used so far is below it
        self._sequence_lock = threading.Lock()
        self._stop = threading.Event()
        self._polling = threading.Event()  # a FetchTask poll is open
        self._last_sent = 0.0  # time.monotonic() of the last message to the coordinator
        self.heartbeat_interval_s = 1.0

    def next_sequence(self) -> int:
        """Strictly increasing across restarts: at least the time in microseconds, and past
        the last one used. The state dir keeps a bound above every number handed out,
        reserved SEQUENCE_RESERVE_US ahead: one synced write a minute instead of one per
        message (each cost a disk flush), and a restarted agent starts past the bound."""
        with self._sequence_lock:
            self._sequence = max(self._sequence + 1, time.time_ns() // 1000)
            if self._sequence >= self._reserved:
                self._reserved = self._sequence + SEQUENCE_RESERVE_US
                # Atomically: an agent SIGKILLed mid-write must still start again.
                atomic_write(self._sequence_file, str(self._reserved).encode())
            return self._sequence

    def envelope(self) -> pb.Envelope:
        self._last_sent = time.monotonic()
        return transport.envelope(self.client_id, self.next_sequence())

    def register(self) -> None:
        """Register, retrying with backoff until the coordinator answers (or stop())."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                reply = self.stub.Register(
                    pb.RegisterRequest(envelope=self.envelope(), agent_version=VERSION),
                    timeout=10,
                )
                self.heartbeat_interval_s = reply.heartbeat_interval_s or 1.0
                log.info("client %d registered with the coordinator", self.client_id)
                return
            except grpc.RpcError as e:
                log.warning(
                    "client %d: register failed (%s); retrying in %.1fs",
                    self.client_id,
                    _describe(e),
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _heartbeats(self) -> None:
        """Heartbeats while the agent is otherwise silent: the coordinator counts an open
        task poll and every message as one, so they go out only while a task runs for
        longer than an interval (training), or between polls."""
        while not self._stop.wait(self.heartbeat_interval_s):
            if self._polling.is_set():
                continue
            if time.monotonic() - self._last_sent < self.heartbeat_interval_s:
                continue
            try:
                self.stub.Heartbeat(pb.HeartbeatRequest(envelope=self.envelope()), timeout=5)
            except grpc.RpcError as e:
                log.warning("client %d: heartbeat failed (%s)", self.client_id, _describe(e))

    def serve_forever(self) -> None:
        """Register, then heartbeat and answer tasks until stop()."""
        self.register()
        threading.Thread(target=self._heartbeats, daemon=True, name="heartbeat").start()
        # Start the worker now: its TensorFlow import and data load (tens of seconds on a
        # busy machine) then overlap the wait for the first round instead of delaying it.
        if self.warm_up:
            self._pool().submit(_worker_warm_up)
        while not self._stop.is_set():
            try:
                self.serve_one(POLL_S)
            except grpc.RpcError as e:
                log.warning("client %d: coordinator unreachable (%s)", self.client_id, _describe(e))
                self._stop.wait(1.0)
                if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    self.register()

    def serve_one(self, wait_s: float) -> bool:
        """Fetch at most one task (waiting up to wait_s), run it and submit the answer."""
        stream = self.stub.FetchTask(
            pb.TaskPoll(envelope=self.envelope(), wait_s=wait_s), timeout=wait_s + 30
        )
        self._polling.set()
        try:
            task, payload = transport.collect(stream, "task")
        finally:
            self._polling.clear()
        if task is None:
            return False
        started = time.perf_counter()
        try:
            meta = json.loads(task.meta_json or b"{}")
            answer, files = self._run(task.kind, meta, transport.unpack(payload))
            result_payload = transport.pack(files)
            result = pb.Result(ok=True, meta_json=json.dumps(answer).encode())
        except Exception as e:  # the agent reports what it refused or failed, and goes on
            log.exception("client %d: task %s (%s) failed", self.client_id, task.task_id, task.kind)
            result_payload = b""
            result = pb.Result(ok=False, error=f"{type(e).__name__}: {e}")
        result.task_id = task.task_id
        result.payload_size = len(result_payload)
        result.payload_sha256 = transport.digest(result_payload)
        result.envelope.CopyFrom(self.envelope())
        ack = self.stub.SubmitResult(transport.result_stream(result, result_payload), timeout=60)
        log.info(
            "client %d: task %s (%s) answered in %.2fs%s",
            self.client_id,
            task.task_id,
            task.kind,
            time.perf_counter() - started,
            "" if ack.accepted else f", not accepted: {ack.reason}",
        )
        return True

    def _run(self, kind: str, meta: dict, files: dict[str, bytes]) -> tuple[dict, dict]:
        """Run a task: the protocol steps here (milliseconds of cryptography; the SecAgg
        state store under the state dir is the same for both processes, and one task runs
        at a time), training in the agent's worker process: it holds the interpreter for
        seconds at a time, and the heartbeats must go on meanwhile. The worker loads the
        data once and keeps its trainer between tasks; a crashed worker is replaced."""
        if kind in client_tasks.NO_DATA:
            return client_tasks.run(self._no_data_context, kind, meta, files)
        try:
            return self._pool().submit(_worker_run, kind, meta, files).result()
        except futures.process.BrokenProcessPool:
            self._worker = None
            raise

    def _pool(self) -> futures.ProcessPoolExecutor:
        if self._worker is None:
            self._worker = futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=self._worker_args,
            )
        return self._worker

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)


_context: client_tasks.AgentContext | None = None


def _worker_init(
    client_id: int,
    data_uri: str,
    state_dir: str,
    credentials: tuple[str, str, str],
    agent_pid: int,
) -> None:
    from fedpipe.agents.local import die_with_parent

    global _context
    die_with_parent(agent_pid)  # a killed agent takes its worker with it
    x, y = data_folder.load(data_uri, state_dir)
    _context = client_tasks.AgentContext(client_id, x, y, Path(state_dir), credentials)


def _worker_warm_up() -> None:
    """What every training task needs first, whatever the run: TensorFlow and Keras."""
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    from fedpipe.training import trainer  # noqa: F401


def _worker_run(kind: str, meta: dict, files: dict[str, bytes]) -> tuple[dict, dict]:
    assert _context is not None
    return client_tasks.run(_context, kind, meta, files)


def _describe(error: grpc.RpcError) -> str:
    return f"{error.code().name}: {error.details()}"


def run(data: str, coordinator: str, cert: str, key: str, ca: str, state_dir: str | None) -> None:
    """The `fedpipe agent` process."""
    state = state_dir or os.path.join(os.path.expanduser("~"), ".fedpipe-agent")
    Agent(data, coordinator, cert, key, ca, state).serve_forever()
