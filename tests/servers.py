"""Real servers on 127.0.0.1 for the tests: PostgreSQL, an S3-compatible store (moto's
server), a GCS emulator, and an MLflow tracking server on PostgreSQL + S3.

Each is a separate process started here, waited for within a bounded time and stopped at
the end of the session. Loopback only: every server binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 120.0
MLFLOW_START_TIMEOUT_S = 300.0  # migrations on PostgreSQL + app import, on a loaded machine
PG_BIN = Path("/usr/lib/postgresql")


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(
    ready: Callable[[], bool],
    process: subprocess.Popen | None,
    what: str,
    log: Path,
    timeout: float = START_TIMEOUT_S,
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.3)
    raise ServerError(f"{what} not ready after {timeout:.0f}s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status < 500


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator:
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield process
    finally:
        # The server's own children (MLflow's uvicorn and job runner) share its process
        # group, which start_new_session made equal to its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def _script(name: str, module: str) -> list[str]:
    """A console script beside this interpreter, else `python -m module`."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


# --- PostgreSQL ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres", "postgresql"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _pg_tool(name: str) -> str:
    """initdb/pg_ctl: Debian keeps them out of PATH, under /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(PG_BIN.glob("*/bin/" + name), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise ServerError(f"{name} not found: install Debian's postgresql (.ci/run does)")
    return str(versions[-1])


def _as_postgres_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; CI runs as root, so drop to the `postgres` user."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """A throwaway cluster in a temp folder, password auth on 127.0.0.1 only."""
    root = Path(tempfile.mkdtemp(prefix="fedpipe-pg-"))
    password = secrets.token_hex(16)
    server = Postgres(port=free_port(), user="fedpipe", password=password)
    data, log = root / "data", root / "postgres.log"
    (root / "pwfile").write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "pwfile", "postgres", "postgres")
    try:
        subprocess.run(
            _as_postgres_user(
                [
                    _pg_tool("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    server.user,
                    f"--pwfile={root / 'pwfile'}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} "
            f"-c unix_socket_directories={root} -c fsync=off"
        )
        start = [_pg_tool("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options]
        subprocess.run(
            _as_postgres_user([*start, "-w", "-t", str(int(START_TIMEOUT_S)), "start"]),
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S + 10,
        )
        try:
            yield server
        finally:
            subprocess.run(
                _as_postgres_user([_pg_tool("pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                capture_output=True,
                timeout=60,
            )
    except subprocess.CalledProcessError as e:
        raise ServerError(f"PostgreSQL: {e.stderr.decode()}\n{_tail(log)}") from e
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- S3 (moto's server) and GCS (gcp-storage-emulator) -------------------------------------


@dataclass(frozen=True)
class S3:
    endpoint: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """What a client needs: the endpoint and (throwaway) credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[S3]:
    port = free_port()
    log = workdir / "s3.log"
    args = [*_script("moto_server", "moto.server"), "-H", "127.0.0.1", "-p", str(port)]
    with _process(args, log) as process:
        endpoint = f"http://127.0.0.1:{port}"
        _wait(lambda: _http_ok(f"{endpoint}/moto-api/"), process, "S3 server", log)
        yield S3(endpoint, access_key="fedpipe-test", secret_key=secrets.token_hex(16))


@contextlib.contextmanager
def gcs_server(workdir: Path) -> Iterator[str]:
    """Yields the emulator's address, for STORAGE_EMULATOR_HOST."""
    port = free_port()
    log = workdir / "gcs.log"
    args = [
        *_script("gcp-storage-emulator", "gcp_storage_emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
    ]
    with _process(args, log) as process:
        host = f"http://127.0.0.1:{port}"
        _wait(lambda: _http_ok(f"{host}/storage/v1/b?project=test"), process, "GCS emulator", log)
        yield host


# --- MLflow tracking server -----------------------------------------------------------------


@contextlib.contextmanager
def mlflow_server(
    workdir: Path, backend_store_uri: str, artifacts_destination: str, env: dict[str, str]
) -> Iterator[str]:
    """`mlflow server` on PostgreSQL, proxying artifacts to S3; yields its http:// URI."""
    port = free_port()
    log = workdir / "mlflow.log"
    args = [
        *_script("mlflow", "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # Store and artifact locations through MLflow's env vars: the password stays out of
    # the process list.
    env = {
        **os.environ,
        **env,
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination,
        # No background job runner (it starts several worker processes; tests use none).
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with _process(args, log, env=env) as process:
        uri = f"http://127.0.0.1:{port}"
        ready = lambda: _http_ok(f"{uri}/health")  # noqa: E731
        _wait(ready, process, "MLflow server", log, MLFLOW_START_TIMEOUT_S)
        yield uri
