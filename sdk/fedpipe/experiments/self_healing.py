"""Self-healing under injected faults: a fault-free pipeline run against a faulty run of
the same task (a share of local-train tasks crash, the whole run crashes at one round and
is re-run, resuming), both through kfp.local, since a crash is a process exit.

Measures, per injected fault, the time from the fault to the completion of its round
(recovery time), the rounds redone, and the wall-time and accuracy cost of the faults. Both
runs are repeated once per seed (the seed moves the data split, the model's initial weights
and which tasks crash); the table gives mean ± std over the seeds.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.config import RunConfig
from fedpipe.experiments import seeds
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
    seed: int
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
        cfg.seed,
        label,
        model.round_number,
        accuracy.accuracy,
        wall,
        runs,
        sum(n - 1 for n in completions.values()),
        round_health.recoveries(state),
    )


def _pairs(results: list[RunResult]) -> list[tuple[RunResult, RunResult]]:
    """(fault-free, faulty) of each seed."""
    by_seed = seeds.group(results, lambda r: r.seed)
    return [(runs[0], runs[1]) for runs in by_seed.values() if len(runs) == 2]


def to_markdown(results: list[RunResult], base: RunConfig) -> str:
    """Per run (fault-free, faulty): mean ± std over the seeds of each column; the cost of
    the faults per seed; the recovery time of each kind of fault over every seed."""
    runs = seeds.group(results, lambda r: r.label)
    seed_list = list(dict.fromkeys(r.seed for r in results))
    lines = [
        f"# Self-healing: {base.data.dataset}, {base.data.num_clients} clients, "
        f"{base.shard_count} local-train tasks a round, {base.training.rounds} rounds, "
        f"seeds {', '.join(map(str, seed_list))}",
        "",
        "Mean ± sample standard deviation over the seeds.",
        "",
        "| run | seeds | completed rounds | pipeline runs | rounds redone | wall time (s) "
        "| accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, group in runs.items():
        lines.append(
            f"| {label} | {len(group)} | "
            f"{seeds.mean_std([r.completed_rounds for r in group], 1)} | "
            f"{seeds.mean_std([r.pipeline_runs for r in group], 1)} | "
            f"{seeds.mean_std([r.rounds_redone for r in group], 1)} | "
            f"{seeds.mean_std([r.wall_s for r in group], 1)} | "
            f"{seeds.mean_std([r.accuracy for r in group], 4)} |"
        )
    pairs = _pairs(results)
    if pairs:
        ratio = seeds.mean_std([bad.wall_s / clean.wall_s for clean, bad in pairs], 2)
        impact = seeds.spread(bad.accuracy - clean.accuracy for clean, bad in pairs)
        lines += [
            "",
            f"Wall time faulty / fault-free: {ratio}; accuracy impact {impact.mean:+.4f} "
            f"(seeds from {impact.low:+.4f} to {impact.high:+.4f}).",
        ]
    recoveries = seeds.group(
        [f for r in results if r.label == "faulty" for f in r.recoveries], lambda f: f.kind
    )
    lines += [
        "",
        "| fault | injected (all seeds) | recovered | recovery time (s) | min - max (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, found in recoveries.items():
        times = [f.recovery_s for f in found if f.recovery_s is not None]
        spread = seeds.spread(times) if times else None
        lines.append(
            f"| {kind} | {len(found)} | {len(times)} | "
            f"{'-' if spread is None else spread.format(1)} | "
            f"{'-' if spread is None else f'{spread.low:.1f} - {spread.high:.1f}'} |"
        )
    return "\n".join(lines) + "\n"


def to_csv(results: list[RunResult]) -> str:
    """The per-seed rows: one per run, then one per injected fault of that run."""
    lines = [
        "seed,run,fault,round,task,recovery_s,completed_rounds,pipeline_runs,rounds_redone,"
        "wall_s,accuracy"
    ]
    for r in results:
        lines.append(
            f"{r.seed},{r.label},,,,,{r.completed_rounds},{r.pipeline_runs},{r.rounds_redone},"
            f"{r.wall_s},{r.accuracy}"
        )
        lines += [
            f"{r.seed},{r.label},{f.kind},{f.round_number},{f.site},"
            f"{'' if f.recovery_s is None else f.recovery_s},,,,,"
            for f in r.recoveries
        ]
    return "\n".join(lines) + "\n"


def figure(results: list[RunResult]) -> Figure:
    """Left: wall time of both runs (mean and each seed); right: recovery time of each
    fault, by kind, a point per fault over every seed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    wall, recovery = fig.subplots(1, 2)
    runs = seeds.group(results, lambda r: r.label)
    stats = {label: seeds.spread(r.wall_s for r in group) for label, group in runs.items()}
    bars = wall.bar(
        list(runs),
        [s.mean for s in stats.values()],
        yerr=[s.std for s in stats.values()],
        color="#4c72b0",
        capsize=4,
    )
    for x, group in enumerate(runs.values()):
        wall.plot([x] * len(group), [r.wall_s for r in group], "k.", alpha=0.6)
    wall.bar_label(
        bars, labels=[f"acc {seeds.mean_std([r.accuracy for r in g])}" for g in runs.values()]
    )
    wall.set(ylabel="wall time (s)", title="whole run (bar: mean ± std, dots: seeds)")
    found = seeds.group(
        [f for r in results if r.label == "faulty" for f in r.recoveries if f.recovery_s],
        lambda f: (f.kind, "aggregate" if f.site == "aggregate" else "local_train"),
    )
    for x, group in enumerate(found.values()):
        recovery.plot([x] * len(group), [f.recovery_s for f in group], "o", alpha=0.7)
    recovery.set_xticks(range(len(found)), [f"{kind}\n{site}" for kind, site in found])
    recovery.set(ylabel="fault to round completed (s)", title="recovery time per fault")
    return fig


def write(results: list[RunResult], base: RunConfig, output: Path) -> list[Path]:
    """table.csv (per-seed rows), table.md (mean ± std) and self_healing.png."""
    output.mkdir(parents=True, exist_ok=True)
    files = [output / name for name in ("table.csv", "table.md", "self_healing.png")]
    files[0].write_text(to_csv(results))
    files[1].write_text(to_markdown(results, base))
    figure(results).savefig(files[2], dpi=120)
    return files


def report(results: list[RunResult], base: RunConfig, output: Path) -> str:
    """Write the tables and the plot and log them to one MLflow run, with the mean and std
    over the seeds of the headline figures as metrics; returns the run id."""
    files = write(results, base, output)
    metrics: dict[str, float] = {}
    pairs = _pairs(results)
    for key, values in (
        ("wall_time_ratio", [bad.wall_s / clean.wall_s for clean, bad in pairs]),
        ("accuracy_impact", [bad.accuracy - clean.accuracy for clean, bad in pairs]),
    ):
        spread = seeds.spread(values)
        metrics[key], metrics[f"{key}_std"] = spread.mean, spread.std
    for label, group in seeds.group(results, lambda r: r.label).items():
        for key in ("accuracy", "wall_s"):
            spread = seeds.spread(getattr(r, key) for r in group)
            metrics[f"{key}/{label}"], metrics[f"{key}_std/{label}"] = spread.mean, spread.std
    seed_list = list(dict.fromkeys(r.seed for r in results))
    return tracking.log_experiment(base, NAME, files, metrics=metrics, params={"seeds": seed_list})


def run(
    base: RunConfig,
    crash_rate: float,
    crash_round: int,
    retries: int,
    output: Path,
    seed_list: list[int],
) -> list[RunResult]:
    """Run both, once per seed (each seed in its own pipeline roots), rewriting the tables
    after every seed so a stopped run keeps the seeds it finished, then log them to MLflow."""
    results: list[RunResult] = []
    for seed in seed_list:
        cfg = base.replace({"seed": seed})
        work = output / f"seed{seed}"
        results += [
            run_pipeline(cfg, "fault-free", work / "fault_free"),
            run_pipeline(faulty(cfg, crash_rate, crash_round, retries), "faulty", work / "faulty"),
        ]
        write(results, base, output)
        print(f"self-healing: seed {seed} done", flush=True)
    report(results, base, output)
    return results
