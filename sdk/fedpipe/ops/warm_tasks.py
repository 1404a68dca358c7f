"""kfp.local tasks forked from a warm interpreter instead of started cold.

kfp.local starts every task as a new `python -m kfp.dsl.executor_main`, so every task pays
the imports (TensorFlow about 4 s, MLflow about 2 s on a quiet 2-core machine) for work
that often takes milliseconds; on one machine that is most of a run. The warm server
imports them once and forks one child per task. A task's command runs
fedpipe/ops/warm_task_client.py in place of the executor: the server's child takes the
client's arguments, environment, working directory and standard streams and runs the same
executor module, so the task still is its own process (its own memory, exit code, crash
and log) and runs the same component code as a cluster pod, only without the imports.

The socket lives in a private (0700) directory: whoever can connect can run code as this
user. The server ends with the process that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

_CLIENT = Path(__file__).with_name("warm_task_client.py")
_EXECUTOR = "kfp.dsl.executor_main"
# What the stages import, lazily or not: the executor, TensorFlow and Keras (training,
# initialize, register), MLflow with its SQL stores (every stage that logs), matplotlib's
# figures (register's plots) and the datasets.
PRELOAD = (
    _EXECUTOR,
    "tensorflow",
    "keras",
    "mlflow",
    "mlflow.keras",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "matplotlib.figure",
    "sklearn.datasets",
    "fedpipe.stages",
)
# The framing warm_task_client.py speaks (it repeats these: it imports nothing of fedpipe):
# the request's length, sent with the three streams, then the task's exit status.
_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!i")


class WarmTasks:
    """A warm task server for one training: start it, rewrite task commands for it, stop it."""

    def __init__(
        self, log: Path, preload: tuple[str, ...] = PRELOAD, start_timeout_s: float = 30.0
    ) -> None:
        self.log = log  # the server's own output (the imports' warnings)
        self.preload = preload
        self.start_timeout_s = start_timeout_s
        self._folder: Path | None = None
        self._server: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        if self._folder is None:
            raise RuntimeError("the warm task server is not running")
        return self._folder / "tasks.sock"

    def __enter__(self) -> WarmTasks:
        self._folder = Path(tempfile.mkdtemp(prefix="fedpipe-warm-"))  # mode 0700
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._server = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self.socket_path), ",".join(self.preload)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while not self.socket_path.exists():  # bound before the imports start
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the warm task server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._server.wait(timeout=10)
            if self._server.poll() is None:
                self._server.kill()
                self._server.wait()
            self._server = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def command(self, full_command: list[str]) -> list[str]:
        """kfp.local's task command with the executor started through this server; a
        command without the executor line kfp.local writes is returned as it is."""
        cold = f"{sys.executable} -m {_EXECUTOR}"
        client, socket_path = shlex.quote(str(_CLIENT)), shlex.quote(str(self.socket_path))
        warm = f"{sys.executable} -I -S {client} {socket_path} {_EXECUTOR}"
        rewritten = [part.replace(cold, warm) for part in full_command]
        if rewritten == full_command:
            warnings.warn(
                "a kfp.local task command without the executor line; it starts cold",
                RuntimeWarning,
                stacklevel=2,
            )
        return rewritten


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    (size,) = _HEADER.unpack(header)
    body = bytearray()
    while len(body) < size:
        chunk = conn.recv(min(1 << 20, size - len(body)))
        if not chunk:
            raise ConnectionError("the task client left before sending its request")
        body += chunk
    return json.loads(body), fds


def _run_task(request: dict, fds: list[int]) -> None:
    """In the forked child: become the task (streams, directory, environment, arguments),
    run the executor module and exit with its status. Never returns."""
    code = 1
    try:
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [request["module"], *request["argv"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        # What the interpreter does at exit, which os._exit skips: wait for the task's
        # non-daemon threads, run its atexit handlers (MLflow flushes its asynchronous
        # logging there), flush the streams.
        with contextlib.suppress(BaseException):
            threading._shutdown()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _serve_one(conn: socket.socket) -> None:
    """In a forked handler: fork the task, wait for it, send its status back; kill it if
    the client goes away. Never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        request, fds = _read_request(conn)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_task(request, fds)
        for fd in fds:
            os.close(fd)
        task = os.pidfd_open(pid)
        ready, _, _ = select.select([task, conn], [], [])
        if task not in ready:  # the client hung up (or wrote, which it never does)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        with contextlib.suppress(OSError):
            conn.sendall(_STATUS.pack(code))
    finally:
        os._exit(0)


def serve(socket_path: str, preload: list[str]) -> None:
    """Bind, import what tasks need, then fork a handler per connection until the process
    that started the server ends."""
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    for module in preload:
        importlib.import_module(module)
    if "sqlalchemy.orm" in sys.modules:  # MLflow's table mappings, set up once, not per task
        sys.modules["sqlalchemy.orm"].configure_mappers()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    while os.getppid() == parent:
        ready, _, _ = select.select([listener], [], [], 1.0)
        if not ready:
            continue
        conn, _ = listener.accept()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            _serve_one(conn)
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], [m for m in sys.argv[2].split(",") if m])
