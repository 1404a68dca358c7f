"""Self-healing under injected faults: a fault-free pipeline run against a faulty run of
the same task (a share of local-train tasks crash, the whole run crashes at one round and
is re-run, resuming), both through kfp.local, since a crash is a process exit.

Measures, per injected fault, the time from the fault to the completion of its round
(recovery time), the rounds redone, and the wall-time and accuracy cost of the faults.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.config import RunConfig, fault_schedule
from fedpipe.ops import local_run, round_health, tracking
from fedpipe.simulation import faults
from fedpipe.training import trainer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "self-healing"
DEFAULTS = {
    "data.num_clients": 10,
    "selection.cohort_size": 10,
    "selection.clients_per_shard": 2,  # five local-train tasks a round
    "training.rounds": 5,
    "training.local_epochs": 2,
    "aggregation.quorum": 0.5,
    "tracking.experiment": "fedpipe-experiments",
    "tracking.registered_model_name": "fedpipe-self-healing",
}


@dataclasses.dataclass(frozen=True)
class RunResult:
    label: str
    completed_rounds: int
    accuracy: float  # held-out accuracy of the final model
    wall_s: float  # every attempt at the run, crashed ones included
    pipeline_runs: int  # 1, or 2 when the run crashed and was resumed
    rounds_redone: int  # rounds completed more than once
    recoveries: list[round_health.Recovery]


def faulty(base: RunConfig, crash_rate: float, crash_round: int, retries: int) -> RunConfig:
    return base.replace(
        {
            "simulation.faults.task_crash_rate": crash_rate,
            "pipeline.task_retries": retries,
            "simulation.faults.schedule": [f"pipeline_crash@{crash_round}"],
        }
    )


def run_pipeline(cfg: RunConfig, label: str, root: Path) -> RunResult:
    """Run the pipeline; after a crash, run the same config again (resuming) until done."""
    started, runs = time.perf_counter(), 0
    while True:
        runs += 1
        try:
            done = local_run.run_pipeline(cfg, root, resume=True)
            break
        except RuntimeError as e:
            if runs > cfg.training.rounds:  # not a fault a re-run gets past
                raise
            print(f"{label}: pipeline run {runs} failed ({str(e)[:120]}); resuming", flush=True)
    wall = time.perf_counter() - started
    model = GlobalModel.load(done.model_path)
    data = trainer.for_config(cfg).data
    accuracy = trainer.for_config(cfg).evaluate(model.weights, data.x_heldout, data.y_heldout)
    state = faults.with_state_dir(cfg, root)
    completions = Counter(round_health.completions(state))
    return RunResult(
        label,
        model.round_number,
        accuracy.accuracy,
        wall,
        runs,
        sum(n - 1 for n in completions.values()),
        round_health.recoveries(state),
    )


def to_markdown(results: list[RunResult], base: RunConfig) -> str:
    clean, faulty_run = results
    lines = [
        f"# Self-healing: {base.data.dataset}, {base.data.num_clients} clients, "
        f"{base.shard_count} local-train tasks a round, {base.training.rounds} rounds",
        "",
        "| run | completed rounds | pipeline runs | rounds redone | wall time (s) | accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.label} | {r.completed_rounds} | {r.pipeline_runs} | {r.rounds_redone} | "
        f"{r.wall_s:.1f} | {r.accuracy:.4f} |"
        for r in results
    ]
    lines += [
        "",
        f"Wall time faulty / fault-free: {faulty_run.wall_s / clean.wall_s:.2f}; "
        f"accuracy impact {faulty_run.accuracy - clean.accuracy:+.4f}.",
        "",
        "| fault | round | task | recovery time (s) |",
        "|---|---:|---|---:|",
    ]
    lines += [
        f"| {r.kind} | {r.round_number} | {r.site} | "
        f"{'-' if r.recovery_s is None else f'{r.recovery_s:.1f}'} |"
        for r in faulty_run.recoveries
    ]
    return "\n".join(lines) + "\n"


def to_csv(results: list[RunResult]) -> str:
    lines = ["run,fault,round,task,recovery_s,completed_rounds,wall_s,accuracy"]
    for r in results:
        lines.append(f"{r.label},,,,,{r.completed_rounds},{r.wall_s},{r.accuracy}")
        lines += [
            f"{r.label},{f.kind},{f.round_number},{f.site},"
            f"{'' if f.recovery_s is None else f.recovery_s},,,"
            for f in r.recoveries
        ]
    return "\n".join(lines) + "\n"


def figure(results: list[RunResult]) -> Figure:
    """Left: wall time and accuracy of both runs; right: recovery time of each fault."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    wall, recovery = fig.subplots(1, 2)
    bars = wall.bar([r.label for r in results], [r.wall_s for r in results], color="#4c72b0")
    wall.bar_label(bars, labels=[f"acc {r.accuracy:.3f}" for r in results])
    wall.set(ylabel="wall time (s)", title="whole run")
    faulty_run = results[-1]
    found = [f for f in faulty_run.recoveries if f.recovery_s is not None]
    recovery.bar(
        [f"r{f.round_number} {f.site}\n{f.kind}" for f in found],
        [f.recovery_s for f in found],
        color=["#c44e52" if f.kind == fault_schedule.PIPELINE_CRASH else "#dd8452" for f in found],
    )
    recovery.set(ylabel="fault to round completed (s)", title="recovery time per fault")
    recovery.tick_params(axis="x", labelsize=7)
    return fig


def run(
    base: RunConfig, crash_rate: float, crash_round: int, retries: int, output: Path
) -> list[RunResult]:
    """Run both, write table.csv, table.md and self_healing.png to output, log them to
    MLflow."""
    output.mkdir(parents=True, exist_ok=True)
    results = [
        run_pipeline(base, "fault-free", output / "fault_free"),
        run_pipeline(faulty(base, crash_rate, crash_round, retries), "faulty", output / "faulty"),
    ]
    (output / "table.csv").write_text(to_csv(results))
    (output / "table.md").write_text(to_markdown(results, base))
    figure(results).savefig(output / "self_healing.png", dpi=120)
    clean, faulty_run = results
    metrics = {
        "wall_time_ratio": faulty_run.wall_s / clean.wall_s,
        "accuracy_impact": faulty_run.accuracy - clean.accuracy,
    }
    for r in results:
        metrics[f"accuracy/{r.label}"] = r.accuracy
        metrics[f"wall_s/{r.label}"] = r.wall_s
    files = [output / name for name in ("table.csv", "table.md", "self_healing.png")]
    tracking.log_experiment(base, NAME, files, metrics=metrics)
    return results
