"""Tasks forked from a warm interpreter: the same tasks as cold ones (own process, exit
code, signal, log, environment), without the imports; killing a task's client kills it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kfp import dsl, local

from fedpipe.ops import progress, warm_tasks

PRELOAD = ("kfp.dsl.executor_main", "fedpipe.stages")  # the test's marker: fedpipe.stages


@dsl.component
def describe(label: str) -> str:
    import os
    import sys

    print(f"task {label} in {os.getcwd()}", flush=True)
    warm = "fedpipe.stages" in sys.modules
    return f"{os.getpid()}|{warm}|{os.environ.get('FEDPIPE_TEST_MARK')}"


@dsl.component
def exits(code: int):
    print("about to exit", code, flush=True)
    raise SystemExit(code)


@dsl.component
def killed():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@dsl.component
def finishes_at_exit(path: str):
    import atexit
    import threading
    import time

    def note(text: str, delay: float = 0.0) -> None:
        time.sleep(delay)
        with open(path, "a") as f:
            f.write(text)

    threading.Thread(target=note, args=("thread ", 0.5)).start()
    atexit.register(note, "atexit")


def _run(component, logs: progress.TaskLogs, root: Path, **arguments):
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=False,
    )
    with logs.capture():
        return component(**arguments)


@pytest.fixture
def warm(tmp_path):
    with warm_tasks.WarmTasks(tmp_path / "warm.log", preload=PRELOAD) as server:
        yield server


def test_warm_tasks_are_their_own_processes_with_their_environment_and_logs(
    warm, tmp_path, monkeypatch
):
    monkeypatch.setenv("FEDPIPE_TEST_MARK", "from-the-driver")
    root = tmp_path / "root"
    logs = progress.TaskLogs(tmp_path / "logs", root, launcher=warm.command)
    first = _run(describe, logs, root, label="one").output.split("|")
    second = _run(describe, logs, root, label="two").output.split("|")
    assert first[1:] == ["True", "from-the-driver"]  # warm, and the driver's environment
    assert second[1:] == ["True", "from-the-driver"]
    assert first[0] != second[0] != str(os.getpid())  # each task a process of its own
    text = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log"))
    assert "task one in" in text and "task two in" in text
    assert [a.return_code for a in logs.attempts] == [0, 0]


def test_the_same_component_started_cold_imports_nothing_ahead(tmp_path):
    root = tmp_path / "root"
    logs = progress.TaskLogs(tmp_path / "logs", root)  # no launcher: kfp.local's own start
    assert _run(describe, logs, root, label="cold").output.split("|")[1] == "False"


def test_exit_codes_and_signals_of_warm_tasks_are_those_of_cold_tasks(warm, tmp_path):
    codes = {}
    for start, launcher in (("warm", warm.command), ("cold", None)):
        root = tmp_path / start
        logs = progress.TaskLogs(tmp_path / start / "logs", root, launcher=launcher)
        _run(exits, logs, root, code=0)
        _run(exits, logs, root, code=3)
        _run(killed, logs, root)
        codes[start] = [a.return_code for a in logs.attempts]
        assert "about to exit 3" in logs.attempts[1].log.read_text()
    # kfp.local's `sh -ec` ends with 128 + 9 when the executor is killed by SIGKILL.
    assert codes["warm"] == codes["cold"] == [0, 3, 128 + signal.SIGKILL]


def test_a_warm_task_ends_as_a_process_does_threads_joined_then_atexit(warm, tmp_path):
    # MLflow's asynchronous logging is flushed by an atexit handler: a warm task must run them.
    root = tmp_path / "root"
    logs = progress.TaskLogs(tmp_path / "logs", root, launcher=warm.command)
    _run(finishes_at_exit, logs, root, path=str(tmp_path / "exit.txt"))
    assert (tmp_path / "exit.txt").read_text() == "thread atexit"


def test_killing_a_tasks_client_kills_the_task(warm, tmp_path):
    pid_file = tmp_path / "task.pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    # The client as a task's command runs it, with a stdlib module in place of the executor.
    client = subprocess.Popen(
        [sys.executable, "-I", "-S", str(warm_tasks._CLIENT), str(warm.socket_path), "timeit"]
        + ["-n", "1", "-r", "1", code]
    )
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.05)
    task = int(pid_file.read_text())
    client.kill()
    client.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(task):
        assert time.monotonic() < deadline, "the task outlived its client"
        time.sleep(0.05)


def test_the_server_stops_with_its_training_and_leaves_no_socket(tmp_path):
    with warm_tasks.WarmTasks(tmp_path / "warm.log", preload=PRELOAD) as server:
        folder = server.socket_path.parent
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        pid = server._server.pid
    assert not folder.exists()
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has ended
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_command_without_the_executor_line_starts_cold_and_says_so(warm):
    with pytest.warns(RuntimeWarning, match="starts cold"):
        assert warm.command(["sh", "-c", "echo hi"]) == ["sh", "-c", "echo hi"]
