"""What `fedpipe run` shows while a training runs, and where the task logs go.

Progress comes from events the stages write, not from timing guesses: initialize and
evaluate append one JSON line each to the file named by FEDPIPE_PROGRESS_FILE (set by the
local driver; unset in a cluster pod, where the events are a no-op). The task output that
kfp.local would print (executor JSON, logs of every task, indented by its swapped
builtins.print) goes instead to one log file per task under the training's folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

PROGRESS_ENV = "FEDPIPE_PROGRESS_FILE"


def emit(event: str, **fields: Any) -> None:
    """Append one event line to the progress file, when a driver asked for one."""
    target = os.environ.get(PROGRESS_ENV)
    if not target:
        return
    line = json.dumps({"event": event, "time": time.time(), **fields}) + "\n"
    # One short O_APPEND write: lines from parallel tasks do not interleave.
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_events(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The complete event lines written since `offset`, and the offset after them."""
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, offset + end


@dataclasses.dataclass(frozen=True)
class TaskAttempt:
    name: str  # the task's folder under the pipeline root, e.g. .../for-loop-2/local-train
    return_code: int
    log: Path


def _task_root(full_command: list[str]) -> Path | None:
    """The task's folder: kfp.local puts the executor output file in it."""
    for i, part in enumerate(full_command[:-1]):
        if part == "--executor_input":
            output_file = json.loads(full_command[i + 1])["outputs"]["outputFile"]
            return Path(output_file).parent
    return None


class TaskLogs:
    """Runs kfp.local's task subprocesses with their output in one log file per task.

    kfp.local's SubprocessRunner starts each task with
    kfp.local.subprocess_task_handler.run_local_subprocess(full_command, env_vars) and prints
    every line it reads; `capture()` swaps that function for one that writes the lines to
    <log_dir>/<pipeline run>/<task>.log (every attempt appended) and reports each
    attempt's exit code. With `echo`, the lines are also passed on (--verbose)."""

    def __init__(
        self,
        log_dir: Path,
        pipeline_root: Path,
        on_attempt: Callable[[TaskAttempt], None] | None = None,
        echo: Callable[[str], None] | None = None,
        launcher: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.launcher = launcher  # rewrites a task's command (fedpipe.ops.warm_tasks)
        self.pipeline_root = pipeline_root
        self.on_attempt = on_attempt
        self.echo = echo
        self.attempts: list[TaskAttempt] = []
        self._lock = threading.Lock()

    def _name(self, full_command: list[str]) -> str:
        root = _task_root(full_command)
        if root is None:
            return "task"
        try:
            return str(root.relative_to(self.pipeline_root))
        except ValueError:
            return root.name

    def run(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        name = self._name(full_command)
        pipeline_run, _, task = name.partition("/")  # one folder per pipeline run
        log = self.log_dir / pipeline_run / ((task or pipeline_run).replace("/", "__") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(env_vars or {})}
        if self.launcher is not None:
            full_command = self.launcher(full_command)
        with log.open("a") as f:
            f.write(f"--- attempt started {time.strftime('%H:%M:%S')} ---\n")
            f.flush()
            if self.echo is None:
                code = subprocess.run(full_command, stdout=f, stderr=subprocess.STDOUT, env=env)
                return_code = code.returncode
            else:
                return_code = self._tee(full_command, env, f, name)
        attempt = TaskAttempt(name, return_code, log)
        with self._lock:
            self.attempts.append(attempt)
        if self.on_attempt is not None:
            self.on_attempt(attempt)
        return return_code

    def _tee(self, full_command: list[str], env: dict[str, str], f: TextIO, name: str) -> int:
        with subprocess.Popen(
            full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                f.write(line)
                self.echo(f"[{name}] {line.rstrip()}")
            return process.wait()

    @contextlib.contextmanager
    def capture(self) -> Iterator[TaskLogs]:
        """Inside, kfp.local's tasks run through `run`. kfp.local also indents its prints
        per task by swapping builtins.print, from the ParallelFor's threads and without a
        lock: their exits interleave and leave wrappers behind, each of which doubles the
        calls of every later print (a test process that had run many pipelines spent a
        minute per task printing). The task output goes to log files here, so there is
        nothing to indent: the swap is off inside, and print is restored on the way out."""
        import builtins

        from kfp.local import logging_utils, subprocess_task_handler

        original = subprocess_task_handler.run_local_subprocess, logging_utils.indented_print
        printer = builtins.print
        subprocess_task_handler.run_local_subprocess = self.run
        logging_utils.indented_print = contextlib.nullcontext
        try:
            yield self
        finally:
            subprocess_task_handler.run_local_subprocess, logging_utils.indented_print = original
            builtins.print = printer

    def failed_names(self) -> list[str]:
        """Tasks whose last attempt failed, in the order they failed."""
        last: dict[str, TaskAttempt] = {}
        for attempt in self.attempts:
            last[attempt.name] = attempt
        return [name for name, a in last.items() if a.return_code != 0]

    def retried(self) -> int:
        """Tasks that ran more than once (a failed attempt, then a retry)."""
        names = [a.name for a in self.attempts]
        return sum(1 for name in set(names) if names.count(name) > 1)

    def failed_attempts(self) -> int:
        return sum(1 for a in self.attempts if a.return_code != 0)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for a failing task's report."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def round_line(event: dict) -> str:
    """One printed line per round, from an evaluate event."""
    n, total = event["round"], event["rounds"]
    if event.get("skipped"):
        return f"round {n:>3}/{total}: skipped ({event.get('stop') or 'stopped'})"
    text = f"round {n:>3}/{total}: accuracy {event['accuracy']:.4f}  loss {event['loss']:.4f}"
    if event.get("accepted") is not None:  # None under DP: the counts are not released
        text += f"  clients {event['accepted']} accepted, {event['rejected']} rejected"
    if event.get("epsilon") is not None:
        text += f"  ε {event['epsilon']:.2f}"
    if event.get("stop"):
        text += f"  ({event['stop']})"
    return text


class LiveProgress:
    """The rich display of a training: a line per finished round above a progress bar with
    rounds done, retried and failed tasks, elapsed time and an estimate of what is left."""

    def __init__(self, total_rounds: int, console: Any, tasks: TaskLogs | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.tasks = tasks
        self.progress = Progress(
            TextColumn("[bold]rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            transient=not console.is_terminal,  # a log file gets the round lines only
        )
        self.bar = self.progress.add_task("rounds", total=total_rounds, status="")
        self.done = 0

    def start(self, completed: int) -> None:
        self.done = completed
        self.progress.update(self.bar, completed=completed)
        self.progress.start()

    def stop(self) -> None:
        self.refresh()
        self.progress.stop()

    def handle(self, event: dict) -> None:
        if event["event"] == "initialized":
            self.console.print(
                f"initialized {event['clients']} clients, model {event['model']}, "
                f"initial accuracy {event['accuracy']:.4f}"
            )
        elif event["event"] == "round":
            self.console.print(round_line(event))
            self.done = max(self.done, event["round"])
            if event.get("stop"):
                self.progress.update(self.bar, total=self.done)
        self.refresh()

    def refresh(self) -> None:
        status = ""
        if self.tasks is not None:
            status = f"tasks retried {self.tasks.retried()}, failed {self.tasks.failed_attempts()}"
        self.progress.update(self.bar, completed=self.done, status=status)


class EventWatcher:
    """Feeds new progress events to a handler from a background thread while a segment
    runs (kfp.local blocks the calling thread)."""

    def __init__(self, path: Path, handler: Callable[[dict], None], offset: int = 0) -> None:
        self.path, self.handler, self.offset = path, handler, offset
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _poll(self) -> None:
        events, self.offset = read_events(self.path, self.offset)
        for event in events:
            self.handler(event)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._poll()

    def __enter__(self) -> EventWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
