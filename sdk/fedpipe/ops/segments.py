"""A training as a chain of segment pipelines, each a fixed number of rounds.

A compiled pipeline holds one segment (rounds_per_segment rounds), so its size does not
depend on the training's rounds. The driver here runs segment after segment: the first
initializes the training (model, client registry, MLflow run); each next one imports the
previous segment's model and registry by URI and logs to the same MLflow run, with the
global round numbers. The chain ends at the configured rounds or earlier when a segment
reports a stop (target accuracy or privacy budget); the last segment registers the model
(a registration-only pipeline does it after an early stop). The state after every
finished segment is saved in the training's folder, so a crashed training resumes from
the last finished segment.

Two backends run a segment: kfp.local on this machine (fedpipe.ops.local_run) and a KFP
cluster through kfp.Client (ClusterBackend, `fedpipe submit`).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from pathlib import Path
from typing import Any, Protocol

from fedpipe.config import RunConfig

STATE_FILE = "training.json"


def rounds_per_segment(config: RunConfig) -> int:
    """The one place the driver reads the segment length from the run config."""
    return min(config.pipeline.rounds_per_segment, config.training.rounds)


@dataclasses.dataclass(frozen=True)
class SegmentPlan:
    """The next segment to run: its rounds and the previous segment's artifacts."""

    training_id: str
    first_round: int
    rounds: int
    continuation: bool
    register_model: bool
    model_uri: str = ""
    registry_uri: str = ""
    mlflow_run_id: str = ""

    @property
    def last_round(self) -> int:
        return self.first_round + self.rounds - 1

    def arguments(self, config_json: str) -> dict[str, Any]:
        """The segment pipeline's parameters."""
        args: dict[str, Any] = {
            "config_json": config_json,
            "training_id": self.training_id,
            "first_round": self.first_round,
        }
        if self.continuation:
            args.update(
                model_uri=self.model_uri,
                registry_uri=self.registry_uri,
                mlflow_run_id=self.mlflow_run_id,
            )
        return args


@dataclasses.dataclass(frozen=True)
class SegmentResult:
    mlflow_run_id: str
    model_uri: str
    registry_uri: str
    stop_reason: str | None = None  # the training stopped (target accuracy, privacy budget)
    registration: str | None = None  # the registration report, when the segment registered


@dataclasses.dataclass
class FinishedSegment:
    first_round: int
    last_round: int
    model_uri: str
    registry_uri: str
    stop_reason: str | None = None
    pipeline_run: str = ""


@dataclasses.dataclass
class TrainingState:
    """One training: what its driver saved after every finished segment."""

    training_id: str
    config_json: str
    folder: str
    mlflow_run_id: str = ""
    segments: list[FinishedSegment] = dataclasses.field(default_factory=list)
    registration: str | None = None

    @property
    def next_round(self) -> int:
        return self.segments[-1].last_round + 1 if self.segments else 1

    @property
    def stop_reason(self) -> str | None:
        return self.segments[-1].stop_reason if self.segments else None

    @property
    def finished(self) -> bool:
        return self.registration is not None

    @property
    def path(self) -> Path:
        return Path(self.folder) / STATE_FILE

    def record(self, plan: SegmentPlan, result: SegmentResult, pipeline_run: str = "") -> None:
        self.mlflow_run_id = result.mlflow_run_id
        self.segments.append(
            FinishedSegment(
                plan.first_round,
                plan.last_round,
                result.model_uri,
                result.registry_uri,
                result.stop_reason,
                pipeline_run,
            )
        )
        if result.registration is not None:
            self.registration = result.registration
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        tmp.replace(self.path)  # a crash never leaves half a state file

    @classmethod
    def load(cls, path: Path) -> TrainingState:
        raw = json.loads(path.read_text())
        segments = [FinishedSegment(**s) for s in raw.pop("segments")]
        return cls(segments=segments, **raw)


def new_training(config: RunConfig, trainings_dir: Path) -> TrainingState:
    """A fresh training: a new id (so nothing of an earlier training is reused from a cache)
    and its own folder."""
    training_id = f"training-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    state = TrainingState(training_id, config.to_json(), str(trainings_dir / training_id))
    state.save()
    return state


def unfinished_training(config: RunConfig, trainings_dir: Path) -> TrainingState | None:
    """The most recent training in this folder that did not finish, to resume; an error
    when it was started with another config (resuming must not change the training)."""
    states = sorted(trainings_dir.glob(f"*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
    for path in reversed(states):
        state = TrainingState.load(path)
        if state.finished:
            continue
        if state.config_json != config.to_json():
            raise ValueError(
                f"the unfinished training {state.training_id} ({path}) was started with "
                "another config; resume it with the same config"
            )
        return state
    return None


def next_segment(config: RunConfig, state: TrainingState) -> SegmentPlan | None:
    """The segment to run next, or None when the chain is over (all rounds done, or a stop:
    early stop ends the chain instead of running pass-through rounds)."""
    first = state.next_round
    if state.finished or state.stop_reason is not None or first > config.training.rounds:
        return None
    rounds = min(rounds_per_segment(config), config.training.rounds - first + 1)
    last_segment = state.segments[-1] if state.segments else None
    return SegmentPlan(
        training_id=state.training_id,
        first_round=first,
        rounds=rounds,
        continuation=first > 1,
        register_model=first + rounds - 1 == config.training.rounds,
        model_uri=last_segment.model_uri if last_segment else "",
        registry_uri=last_segment.registry_uri if last_segment else "",
        mlflow_run_id=state.mlflow_run_id,
    )


class Backend(Protocol):
    """Where segments run: kfp.local here, a KFP cluster through kfp.Client."""

    def run_segment(self, config: RunConfig, plan: SegmentPlan) -> SegmentResult: ...

    def register(self, config: RunConfig, state: TrainingState) -> str: ...


def chain(config: RunConfig, state: TrainingState, backend: Backend) -> TrainingState:
    """Run segments until the training is over, then make sure it is registered."""
    while (plan := next_segment(config, state)) is not None:
        state.record(plan, backend.run_segment(config, plan))
    if not state.finished:  # stopped early, in a segment that did not register
        state.registration = backend.register(config, state)
        state.save()
    return state


# The hand-over through MLflow, for a backend whose artifacts the driver cannot read
# (a cluster's object store): evaluate logs where each round's model and registry are.


def checkpoint_path(round_number: int) -> str:
    return f"checkpoints/round_{round_number:04d}.json"


def log_checkpoint(
    config: RunConfig,
    mlflow_run_id: str,
    round_number: int,
    model_uri: str,
    registry_uri: str,
    registry: Any,
) -> None:
    """Record, in the training's MLflow run, the URIs of a round's model and registry and
    whether the training stopped (called by the evaluate component)."""
    from fedpipe.ops import tracking

    tracking.client(config).log_dict(
        mlflow_run_id,
        {
            "round": round_number,
            "model_uri": model_uri,
            "registry_uri": registry_uri,
            "stop_reason": registry.stop_reason if registry.stopped else None,
        },
        checkpoint_path(round_number),
    )


def _training_run_id(config: RunConfig, training_id: str) -> str:
    from fedpipe.ops import tracking

    client = tracking.client(config)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`fedpipe.training_id` = '{training_id}'"
    )
    if len(runs) != 1:
        raise RuntimeError(f"expected one MLflow run of {training_id}, found {len(runs)}")
    return runs[0].info.run_id


def read_checkpoint(config: RunConfig, training_id: str, round_number: int) -> SegmentResult:
    """A finished segment's hand-over, read back from MLflow."""
    import mlflow

    run_id = _training_run_id(config, training_id)  # also points mlflow at the tracking URI
    checkpoint = mlflow.artifacts.load_dict(f"runs:/{run_id}/{checkpoint_path(round_number)}")
    return SegmentResult(
        run_id, checkpoint["model_uri"], checkpoint["registry_uri"], checkpoint["stop_reason"]
    )


def read_registration(config: RunConfig, mlflow_run_id: str) -> str:
    """The registered version of a training and its promotion verdict, from MLflow."""
    from fedpipe.ops import tracking

    client = tracking.client(config)
    versions = client.search_model_versions(
        f"name = '{config.tracking.registered_model_name}' and run_id = '{mlflow_run_id}'"
    )
    if not versions:
        raise RuntimeError(f"no registered version of MLflow run {mlflow_run_id}")
    version = max(versions, key=lambda v: int(v.version))
    return (
        f"Model `{config.tracking.registered_model_name}` version {version.version}: "
        f"promoted {version.tags.get('promotion', 'unknown')}"
    )


class SegmentFailed(RuntimeError):
    pass


class ClusterBackend:
    """Segments as runs on a KFP backend, through the two kfp.Client calls used here:
    create_run_from_pipeline_package and wait_for_run_completion. The hand-over between
    segments goes through MLflow (log_checkpoint), which both the pods and the driver
    reach."""

    def __init__(
        self,
        client: Any,
        compile_dir: Path,
        *,
        experiment_name: str,
        image: str | None = None,
        timeout_s: int = 24 * 3600,
        enable_caching: bool = False,
    ) -> None:
        self.client = client
        self.compile_dir = compile_dir
        self.experiment_name = experiment_name
        self.image = image
        self.timeout_s = timeout_s
        self.enable_caching = enable_caching
        self.runs: list[str] = []

    def _submit(self, package: Path, arguments: dict[str, Any], run_name: str) -> None:
        run = self.client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            experiment_name=self.experiment_name,
            enable_caching=self.enable_caching,
        )
        self.runs.append(run.run_id)
        finished = self.client.wait_for_run_completion(run.run_id, timeout=self.timeout_s)
        state = str(getattr(finished, "state", "")).upper()
        if not state.endswith("SUCCEEDED"):
            raise SegmentFailed(f"KFP run {run.run_id} ({run_name}) ended {state or 'unknown'}")

    def run_segment(self, config: RunConfig, plan: SegmentPlan) -> SegmentResult:
        from fedpipe.ops import compilation

        package = compilation.compile_segment(
            config,
            self.compile_dir,
            plan.rounds,
            continuation=plan.continuation,
            register_model=plan.register_model,
            image=self.image,
        )
        name = f"{plan.training_id} rounds {plan.first_round}-{plan.last_round}"
        self._submit(package, plan.arguments(config.to_json()), name)
        result = read_checkpoint(config, plan.training_id, plan.last_round)
        if plan.register_model:
            result = dataclasses.replace(
                result, registration=read_registration(config, result.mlflow_run_id)
            )
        return result

    def register(self, config: RunConfig, state: TrainingState) -> str:
        from fedpipe.ops import compilation

        package = compilation.compile_registration(config, self.compile_dir, image=self.image)
        last = state.segments[-1]
        self._submit(
            package,
            {
                "config_json": config.to_json(),
                "model_uri": last.model_uri,
                "registry_uri": last.registry_uri,
                "mlflow_run_id": state.mlflow_run_id,
            },
            f"{state.training_id} register",
        )
        return read_registration(config, state.mlflow_run_id)
