"""A federation on one machine: a coordinator and agents as real processes on 127.0.0.1,
each agent with its own data folder and state dir. For the demo, the tests and the
benchmark; every wait is bounded and stop() ends every process it started."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fedpipe.agents import provisioning, remote_clients

_CLI = ["-c", "from fedpipe.cli import main; main()"]
_PR_SET_PDEATHSIG = 1
# Set by LocalFederation for the coordinator and agents it starts: the pid they die with.
PARENT_PID_ENV = "FEDPIPE_DIE_WITH_PARENT"


def die_with_parent(parent_pid: int) -> None:
    """Be killed when the thread that started this process ends (Linux's parent-death
    signal), so an interrupted test or demo leaves no coordinator, agent or worker
    behind; exit now if `parent_pid` has already ended (Linux only).

    Called by the child itself once it runs, not as a `preexec_fn`: one makes subprocess
    fork rather than spawn, which runs gRPC's fork handlers in a parent that uses gRPC,
    and those can leave the child hung before its exec (its poller's epoll fd closed
    under it, grpc/grpc#43157; an agent of test_agents_storage never started so)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def die_with_launcher() -> None:
    """die_with_parent for a process LocalFederation started (none otherwise)."""
    parent = os.environ.pop(PARENT_PID_ENV, None)
    if parent:
        die_with_parent(int(parent))


class LocalFederation:
    def __init__(
        self,
        root: str | Path,
        clients: int,
        *,
        heartbeat_interval_s: float = 1.0,
        heartbeat_timeout_s: float = 15.0,
    ) -> None:
        self.root = Path(root)
        self.clients = clients
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.tls = provisioning.provision(self.root / "tls", clients)
        self.address = ""
        self.coordinator: subprocess.Popen | None = None
        self.agents: dict[int, subprocess.Popen] = {}

    def _spawn(
        self, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        env = {
            **os.environ,
            **(env or {}),
            "PYTHONUNBUFFERED": "1",
            PARENT_PID_ENV: str(os.getpid()),
        }
        with open(log, "ab") as out:
            return subprocess.Popen(
                [sys.executable, *_CLI, *args], stdout=out, stderr=subprocess.STDOUT, env=env
            )

    @property
    def coordinator_log(self) -> Path:
        return self.root / "coordinator.log"

    def agent_log(self, client_id: int) -> Path:
        return self.root / f"agent-{client_id}.log"

    def start_coordinator(self, timeout_s: float = 60.0) -> str:
        """Start the coordinator on a free port; return its HOST:PORT once it listens."""
        t = self.tls
        self.coordinator = self._spawn(
            [
                "coordinator",
                "--port",
                "0",
                "--cert",
                str(t.cert("coordinator")),
                "--key",
                str(t.key("coordinator")),
                "--ca",
                str(t.ca_cert),
                "--state-dir",
                str(self.root / "coordinator-state"),
                "--heartbeat-interval",
                str(self.heartbeat_interval_s),
                "--heartbeat-timeout",
                str(self.heartbeat_timeout_s),
            ],
            self.coordinator_log,
        )
        ready = re.compile(r"coordinator ready on (\S+)")

        def listening() -> bool:
            if self.coordinator.poll() is not None:
                raise RuntimeError(f"coordinator exited: {self.coordinator_log.read_text()}")
            found = ready.search(self.coordinator_log.read_text())
            self.address = found.group(1) if found else ""
            return bool(found)

        wait_until(listening, timeout_s, "the coordinator to listen")
        return self.address

    def start_agent(
        self,
        client_id: int,
        data_dir: str | Path,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start client_id's agent (by default with its own certificate); `env` is added to
        this agent's environment only (its object-store credentials, say)."""
        name = provisioning.client_cn(client_id)
        process = self._spawn(
            [
                "agent",
                "--data",
                str(data_dir),
                "--coordinator",
                self.address,
                "--cert",
                str(cert or self.tls.cert(name)),
                "--key",
                str(key or self.tls.key(name)),
                "--ca",
                str(self.tls.ca_cert),
                "--state-dir",
                str(self.state_dir(client_id)),
            ],
            self.agent_log(client_id),
            env,
        )
        self.agents[client_id] = process
        return process

    def state_dir(self, client_id: int) -> Path:
        return self.root / f"agent-{client_id}-state"

    def kill_agent(self, client_id: int, sig: int = signal.SIGKILL) -> None:
        process = self.agents.pop(client_id)
        process.send_signal(sig)
        process.wait(timeout=30)

    def start(self, owners: Sequence[str | Path], timeout_s: float = 180.0) -> LocalFederation:
        """The coordinator and one agent per data folder (client i reads owners[i]),
        returned once every agent heartbeats."""
        self.start_coordinator()
        for c, folder in enumerate(owners):
            self.start_agent(c, folder)
        self.wait_online(range(len(owners)), timeout_s=timeout_s)
        return self

    def run_config(self, task_timeout_s: float) -> dict[str, object]:
        """The run config's fields that point the pipeline's client steps at these agents."""
        return {
            "clients.runtime": "agents",
            "clients.coordinator": self.address,
            "clients.tls_dir": str(self.tls.root),
            "clients.task_timeout_s": task_timeout_s,
        }

    def remote(self, task_timeout_s: float = 120.0) -> remote_clients.RemoteClients:
        return remote_clients.RemoteClients(self.address, self.tls.root, task_timeout_s)

    def wait_online(self, client_ids, timeout_s: float = 120.0) -> None:
        wanted = set(client_ids)
        with self.remote() as remote:
            wait_until(lambda: wanted <= set(remote.online()), timeout_s, f"agents {wanted}")

    def stop(self) -> None:
        """Kill every process this federation started."""
        processes = [*self.agents.values(), *([self.coordinator] if self.coordinator else [])]
        for p in processes:
            if p.poll() is None:
                p.kill()
        for p in processes:
            p.wait(timeout=30)
        self.agents.clear()
        self.coordinator = None

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)
