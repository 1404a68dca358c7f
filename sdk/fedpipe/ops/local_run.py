"""Running a training on this machine through Kubeflow's local runner, segment by segment.

Every segment is a compiled pipeline run by kfp.local (fedpipe.ops.segments chains them).
What kfp.local would print goes to files under the training's folder: the runner's own
log (kfp-local.log) and one log per task (logs/); the terminal gets the live progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedpipe.clients import runtime as client_runtime
from fedpipe.config import RunConfig
from fedpipe.ops import compilation, progress, segments, warm_tasks
from fedpipe.ops.tracking import redact_uri
from fedpipe.simulation import faults


@dataclasses.dataclass(frozen=True)
class LocalRun:
    config: RunConfig
    pipeline_root: Path
    training: segments.TrainingState
    pipeline_yaml: Path  # the first segment's compiled pipeline
    model_path: Path
    registration: str
    seconds: float

    @property
    def folder(self) -> Path:
        return Path(self.training.folder)

    def summary(self) -> str:
        uri = redact_uri(self.config.tracking.uri)
        state = self.training
        rounds = state.segments[-1].last_round if state.segments else 0
        stop = f" ({state.stop_reason})" if state.stop_reason else ""
        return "\n".join(
            [
                self.registration.strip().splitlines()[-1],
                f"{rounds} rounds in {len(state.segments)} segment(s){stop}, "
                f"{self.seconds:.0f}s; training {state.training_id}",
                f"  MLflow run {state.mlflow_run_id} in {uri}"
                f" (experiment '{self.config.tracking.experiment}')",
                f"  compiled pipelines: {self.folder / 'pipelines'}",
                f"  task logs: {self.folder / 'logs'}",
                f"  look at it: fedpipe dashboard, or mlflow ui --backend-store-uri {uri}",
            ]
        )


class TaskFailed(RuntimeError):
    """A segment failed; the message names the failing task and shows its log tail."""


@contextlib.contextmanager
def _quiet_runner(log: Path) -> Iterator[None]:
    """kfp.local's own messages (task starts, outputs, warnings) go to a log file."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


class LocalBackend:
    """Segments run by kfp.local in one pipeline root; the training folder holds the
    compiled pipelines, the progress events and the logs."""

    def __init__(
        self, pipeline_root: Path, folder: Path, *, caching: bool, task_logs: progress.TaskLogs
    ) -> None:
        self.pipeline_root = pipeline_root
        self.folder = folder
        self.caching = caching
        self.task_logs = task_logs

    def _run(self, package: Path, arguments: dict[str, Any]) -> Any:
        from kfp import components, local

        with _quiet_runner(self.folder / "kfp-local.log"), self.task_logs.capture():
            local.init(
                runner=local.SubprocessRunner(use_venv=False),
                pipeline_root=str(self.pipeline_root),
                raise_on_error=True,
                enable_caching=self.caching,
            )
            pipeline = components.load_component_from_file(str(package))
            try:
                return pipeline(**arguments)
            except RuntimeError as e:
                raise self._failure(e) from e

    def _failure(self, error: RuntimeError) -> TaskFailed:
        failed = self.task_logs.failed_names()
        if not failed:
            return TaskFailed(str(error))
        name = failed[-1]
        log = next(a.log for a in reversed(self.task_logs.attempts) if a.name == name)
        return TaskFailed(f"task {name} failed (log {log}); its last lines:\n{progress.tail(log)}")

    def run_segment(self, config: RunConfig, plan: segments.SegmentPlan) -> segments.SegmentResult:
        from fedpipe.artifacts.client_registry import ClientRegistry

        package = compilation.compile_segment(
            config,
            self.folder / "pipelines",
            plan.rounds,
            continuation=plan.continuation,
            register_model=plan.register_model,
        )
        task = self._run(package, plan.arguments(config.to_json()))
        model, registry = task.outputs["model"], task.outputs["registry"]
        loaded = ClientRegistry.load(registry.path)
        registration = (
            Path(task.outputs["registration"].path).read_text() if plan.register_model else None
        )
        return segments.SegmentResult(
            mlflow_run_id=task.outputs["mlflow_run_id"],
            model_uri=model.uri,
            registry_uri=registry.uri,
            stop_reason=loaded.stop_reason if loaded.stopped else None,
            registration=registration,
        )

    def register(self, config: RunConfig, state: segments.TrainingState) -> str:
        package = compilation.compile_registration(config, self.folder / "pipelines")
        last = state.segments[-1]
        task = self._run(
            package,
            {
                "config_json": config.to_json(),
                "model_uri": last.model_uri,
                "registry_uri": last.registry_uri,
                "mlflow_run_id": state.mlflow_run_id,
            },
        )
        return Path(task.output.path).read_text()


def run_pipeline(
    config: RunConfig,
    pipeline_root: Path,
    *,
    resume: bool = False,
    console: Any = None,
    verbose: bool = False,
    cold_tasks: bool = False,
) -> LocalRun:
    """Run a training as chained segment pipelines with kfp.local. A fresh run is a new
    training (its own MLflow run and registered version) even with the same config; with
    resume, the last unfinished training of this config in this pipeline root continues
    from its last finished segment, reusing the tasks the crashed segment finished.
    Tasks fork from a warm interpreter (fedpipe.ops.warm_tasks) unless cold_tasks: then
    each starts a new Python, as a cluster pod does."""
    from rich.console import Console

    started = time.perf_counter()
    pipeline_root = pipeline_root.resolve()
    config = faults.with_state_dir(config, pipeline_root)
    config = client_runtime.with_state_dir(config, pipeline_root)
    console = console or Console(file=sys.stdout, highlight=False, soft_wrap=True)
    trainings = pipeline_root / "trainings"
    state = segments.unfinished_training(config, trainings) if resume else None
    if state is None:
        state = segments.new_training(config, trainings)
        console.print(f"training {state.training_id}: {config.training.rounds} rounds")
    else:
        console.print(
            f"resuming training {state.training_id} at round {state.next_round} "
            f"of {config.training.rounds}"
        )
    folder = Path(state.folder)
    events = folder / "progress.jsonl"
    tasks = progress.TaskLogs(
        folder / "logs",
        pipeline_root,
        echo=(lambda line: console.print(line, markup=False)) if verbose else None,
    )
    display = progress.LiveProgress(config.training.rounds, console, tasks)
    backend = LocalBackend(pipeline_root, folder, caching=resume, task_logs=tasks)
    offset = events.stat().st_size if events.exists() else 0
    previous = os.environ.get(progress.PROGRESS_ENV)
    os.environ[progress.PROGRESS_ENV] = str(events)
    display.start(state.next_round - 1)
    try:
        with contextlib.ExitStack() as stack:
            if not cold_tasks:
                warm = stack.enter_context(warm_tasks.WarmTasks(folder / "warm-tasks.log"))
                tasks.launcher = warm.command
            stack.enter_context(progress.EventWatcher(events, display.handle, offset))
            state = segments.chain(config, state, backend)
    finally:
        display.stop()
        if previous is None:
            os.environ.pop(progress.PROGRESS_ENV, None)
        else:
            os.environ[progress.PROGRESS_ENV] = previous
    first = state.segments[0]
    return LocalRun(
        config=config,
        pipeline_root=pipeline_root,
        training=state,
        pipeline_yaml=folder
        / "pipelines"
        / compilation.segment_file_name(
            first.last_round - first.first_round + 1,
            False,
            first.last_round == config.training.rounds,
        ),
        model_path=Path(state.segments[-1].model_uri),
        registration=state.registration or "",
        seconds=time.perf_counter() - started,
    )
