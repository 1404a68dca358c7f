"""`fedpipe experiment selection`: do learned client-selection policies reach a target
accuracy sooner than uniform random selection, on non-IID data and heterogeneous clients?

Every policy runs the same task (same partition, same client system profiles) for each
seed through the in-process simulation, i.e. the pipeline's own stages. The table reports
rounds and simulated wall-clock time to the target and the final accuracy, as mean ± std
over seeds; the plot shows accuracy against simulated time and against rounds.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpipe.aggregation.outcome import QuorumNotMet
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.config import RunConfig
from fedpipe.ops import tracking

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "selection"
# The task: 100 clients on the MNIST test set, label-Dirichlet(0.3), cohorts of 10, a
# softmax model trained for one local epoch, clients of log-normal speed that crash,
# go offline and miss a 2-second deadline. Overridable with --set.
TASK: dict[str, Any] = {
    "data.dataset": "mnist",
    "data.data_dir": "../shared/data/mnist",
    "data.num_clients": 100,
    "data.partitioner": "dirichlet",
    "data.dirichlet_alpha": 0.3,
    "selection.cohort_size": 10,
    "selection.clients_per_shard": 10,
    "model.name": "logistic_regression",
    "training.local_epochs": 1,
    "training.batch_size": 16,
    "training.learning_rate": 0.1,
    "training.rounds": 60,
    "aggregation.quorum": 0.1,
    "simulation.systems.speed_sigma": 1.0,
    "simulation.systems.failure_rate": 0.2,
    "simulation.systems.availability": 0.9,
    "simulation.systems.round_deadline_s": 2.0,
    "tracking.experiment": "fedpipe-experiment-selection",
}


@dataclasses.dataclass(frozen=True)
class RunCurve:
    policy: str
    seed: int
    accuracy: list[float]  # of the initial model (round 0), then after rounds 1..R
    simulated_time_s: list[float]  # cumulative, at the end of rounds 0..R
    failed_at: int | None  # the round that missed its quorum, if any

    @property
    def rounds(self) -> int:
        return len(self.accuracy) - 1

    def first_reaching(self, target: float) -> int | None:
        """The first round whose model is at or above the target."""
        return next((n for n, a in enumerate(self.accuracy) if a >= target), None)


def run_policy(config: RunConfig, workdir: Path) -> RunCurve:
    """One simulation; its per-round registries hold accuracy and simulated time."""
    from fedpipe.simulation.runner import simulate

    shutil.rmtree(workdir, ignore_errors=True)  # no rounds left over from an earlier run
    failed_at = None
    try:
        simulate(
            config, workdir, run_name=f"{config.selection.policy}-seed{config.seed}", register=False
        )
    except QuorumNotMet as e:
        failed_at = len(list(workdir.glob("round_*/registry.json")))
        print(f"{config.selection.policy} seed {config.seed}: stopped, {e}", flush=True)
    registries = [ClientRegistry.load(p) for p in sorted(workdir.glob("round_*/registry.json"))]
    return RunCurve(
        config.selection.policy,
        config.seed,
        [r.last_accuracy for r in registries],
        [r.simulated_time_s for r in registries],
        failed_at,
    )


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def summarize(curves: list[RunCurve], target: float) -> list[dict[str, str]]:
    """One table row per policy; time and rounds to target over the seeds that reached it."""
    rows = []
    for policy in dict.fromkeys(c.policy for c in curves):
        runs = [c for c in curves if c.policy == policy]
        hits = [(c, c.first_reaching(target)) for c in runs]
        hits = [(c, i) for c, i in hits if i is not None]
        rows.append(
            {
                "policy": policy,
                "seeds reaching target": f"{len(hits)}/{len(runs)}",
                "rounds to target": _mean_std([i for _, i in hits]),
                "simulated s to target": _mean_std([c.simulated_time_s[i] for c, i in hits]),
                "final accuracy": _mean_std([c.accuracy[-1] for c in runs if c.rounds]),
                "simulated s per round": _mean_std(
                    [c.simulated_time_s[-1] / c.rounds for c in runs if c.rounds]
                ),
            }
        )
    return rows


def to_markdown(rows: list[dict[str, str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(curves: list[RunCurve], target: float) -> Figure:
    """Accuracy against simulated time and against rounds, mean over seeds per policy."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    by_time, by_round = fig.subplots(1, 2)
    horizon = max(max(c.simulated_time_s, default=0.0) for c in curves)
    grid = np.linspace(0, horizon, 200)
    for policy in dict.fromkeys(c.policy for c in curves):
        runs = [c for c in curves if c.policy == policy and c.rounds]
        # Accuracy at time t, interpolated between rounds (nan after a run's end).
        at_time = np.array(
            [np.interp(grid, c.simulated_time_s, c.accuracy, right=np.nan) for c in runs]
        )
        live = ~np.isnan(at_time).all(axis=0)  # until the policy's last run has ended
        at_time = at_time[:, live]
        (line,) = by_time.plot(grid[live], np.nanmean(at_time, axis=0), label=policy)
        by_time.fill_between(
            grid[live],
            np.nanmin(at_time, axis=0),
            np.nanmax(at_time, axis=0),
            alpha=0.15,
            color=line.get_color(),
        )
        length = min(len(c.accuracy) for c in runs)
        rounds = np.arange(length)
        per_round = np.array([c.accuracy[:length] for c in runs])
        by_round.plot(rounds, per_round.mean(axis=0), label=policy, color=line.get_color())
    for ax, xlabel in ((by_time, "simulated time (s)"), (by_round, "round")):
        ax.axhline(target, linestyle="--", color="gray", linewidth=1)
        ax.set(xlabel=xlabel, ylabel="held-out accuracy (mean over seeds)")
        ax.grid(alpha=0.3)
    by_time.legend(loc="lower right")
    by_time.set_title("shaded: min-max over seeds")
    return fig


def run(
    base: RunConfig,
    *,
    seeds: list[int],
    policies: tuple[str, ...],
    target: float,
    output_dir: Path,
) -> list[dict[str, str]]:
    """Run every policy for every seed; write table.csv, table.md, curves.json and
    accuracy.png to output_dir and log them to MLflow."""
    output_dir.mkdir(parents=True, exist_ok=True)
    curves = []
    for seed in seeds:
        for policy in policies:
            started = time.perf_counter()
            config = base.replace({"selection.policy": policy, "seed": seed})
            curve = run_policy(config, output_dir / "work" / f"{policy}_seed{seed}")
            curves.append(curve)
            reached = curve.first_reaching(target)
            print(
                f"{policy} seed {seed}: final accuracy {curve.accuracy[-1]:.4f}, target "
                + (
                    f"reached in round {reached} at {curve.simulated_time_s[reached]:.1f} "
                    "simulated s"
                    if reached is not None
                    else "not reached"
                )
                + f" ({time.perf_counter() - started:.0f}s)",
                flush=True,
            )
    rows = summarize(curves, target)
    with (output_dir / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    markdown = f"# Client selection: target accuracy {target}, seeds {seeds}\n\n" + to_markdown(
        rows
    )
    (output_dir / "table.md").write_text(markdown)
    (output_dir / "curves.json").write_text(
        json.dumps([dataclasses.asdict(c) for c in curves], indent=1)
    )
    figure = plot(curves, target)
    figure.savefig(output_dir / "accuracy.png", dpi=120)
    tracking.log_experiment(
        base,
        NAME,
        [output_dir / name for name in ("table.csv", "table.md", "curves.json", "accuracy.png")],
        params={
            "experiment_target_accuracy": target,
            "experiment_seeds": ",".join(map(str, seeds)),
        },
    )
    return rows
