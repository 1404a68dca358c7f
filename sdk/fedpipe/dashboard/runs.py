"""What the dashboard shows of a run, read from MLflow through MlflowClient only (the
tracking server may be remote; its database is never opened directly)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Names the pipeline logs (stages/evaluate.py, ops/round_health.py, stages/register.py).
ACCURACY, LOSS, EPSILON = "accuracy", "loss", "epsilon"
ACCEPTED, REJECTED = "clients_accepted", "clients_rejected"
HEALTH_PREFIX = "health/"
HEALTH = (
    "health/tasks_retried",
    "health/failed_attempts",
    "health/clients_lost",
    "health/time_lost_s",
    "health/faults",
)
RUN_LIMIT = 100


@dataclasses.dataclass(frozen=True)
class RunRow:
    run_id: str
    experiment_id: str
    name: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    start_time: int  # ms since the epoch
    rounds_done: int
    rounds_planned: int | None
    accuracy: float | None  # final_accuracy when registered, else the latest round's


@dataclasses.dataclass(frozen=True)
class Version:
    model_name: str
    version: str
    promoted: bool
    verdict: str  # the reason register gave (the `promotion` tag)
    aliases: tuple[str, ...]
    description: str


@dataclasses.dataclass(frozen=True)
class RunDetail:
    row: RunRow
    series: dict[str, list[tuple[int, float]]]  # metric name -> (step, value) by step
    target_epsilon: float | None
    target_accuracy: float | None
    dp_delta: float | None  # None: the run has no client-level DP
    versions: list[Version]

    @property
    def running(self) -> bool:
        return self.row.status == "RUNNING"

    def last(self, name: str) -> float | None:
        points = self.series.get(name)
        return points[-1][1] if points else None

    def health_totals(self) -> dict[str, float]:
        return {
            name.removeprefix(HEALTH_PREFIX): sum(v for _, v in self.series.get(name, []))
            for name in HEALTH
        }


def _optional_float(params: dict[str, str], name: str) -> float | None:
    raw = params.get(name)
    try:
        return float(raw) if raw not in (None, "", "None") else None
    except ValueError:
        return None


def _history(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    """One value per step (the last logged, as a round redone after a crash logs twice)."""
    history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.timestamp)
    return sorted({m.step: m.value for m in history}.items())


def _row(client: MlflowClient, run) -> RunRow:
    accuracy = _history(client, run.info.run_id, ACCURACY)
    planned = _optional_float(run.data.params, "training.rounds")
    final = run.data.metrics.get("final_accuracy")
    return RunRow(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        name=run.info.run_name or run.info.run_id,
        status=run.info.status,
        start_time=run.info.start_time or 0,
        rounds_done=max((step for step, _ in accuracy), default=0),
        rounds_planned=int(planned) if planned is not None else None,
        accuracy=final if final is not None else (accuracy[-1][1] if accuracy else None),
    )


def list_runs(client: MlflowClient) -> list[RunRow]:
    """The newest runs of every experiment, newest first."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments, max_results=RUN_LIMIT, order_by=["attributes.start_time DESC"]
    )
    return [_row(client, run) for run in runs]


def _versions(client: MlflowClient, run_id: str) -> list[Version]:
    found = []
    for v in client.search_model_versions(f"run_id = '{run_id}'"):
        verdict = v.tags.get("promotion", "")
        promoted, _, reason = verdict.partition(": ")
        found.append(
            Version(
                model_name=v.name,
                version=str(v.version),
                promoted=promoted == "True",
                verdict=reason or verdict,
                aliases=tuple(getattr(v, "aliases", ()) or ()),
                description=v.description or "",
            )
        )
    return sorted(found, key=lambda v: int(v.version))


def run_detail(client: MlflowClient, run_id: str) -> RunDetail:
    run = client.get_run(run_id)
    names = (ACCURACY, LOSS, ACCEPTED, REJECTED, EPSILON, *HEALTH)
    params = run.data.params
    return RunDetail(
        row=_row(client, run),
        series={name: _history(client, run_id, name) for name in names},
        target_epsilon=_optional_float(params, "aggregation.dp.target_epsilon"),
        target_accuracy=_optional_float(params, "training.target_accuracy"),
        dp_delta=(
            _optional_float(params, "aggregation.dp.delta")
            if _optional_float(params, "aggregation.dp.clip_norm") is not None
            else None
        ),
        versions=_versions(client, run_id),
    )
