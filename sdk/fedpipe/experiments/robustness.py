"""Robustness experiment: held-out accuracy after R rounds for each aggregator under each
attack at each fraction of attacking clients, on non-IID MNIST.

Every cell is a full `fedpipe.simulation.runner.simulate` run (the pipeline's own stages), so
the attacks go through local_train and the aggregators through the aggregate stage. Each
cell runs once per seed (the seed moves the data split, the initial weights and which clients
attack); the table gives mean ± std over the seeds, the CSV every seed's row.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from fedpipe.config import RunConfig
from fedpipe.experiments import seeds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# An aggregator name, or "<aggregator>+screening" for it behind norm screening (exclude).
DEFENCES = (
    "fedavg",
    "fedavg+screening",
    "norm_bounding",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
)
ATTACKS = ("sign_flip", "scaling", "gaussian_noise", "label_flip")
FRACTIONS = (0.0, 0.1, 0.3)

# Non-IID MNIST (the 10k test set: 8,000 training examples over 30 clients, 2,000 held
# out), logistic regression, every client in every round. The defence is sized for the
# worst fraction: f = 30% of the cohort, trimmed mean cuts 30% per side.
SETTINGS = {
    "data.dataset": "mnist",
    "data.data_dir": "../shared/data/mnist",
    "data.partitioner": "dirichlet",
    "data.dirichlet_alpha": 0.5,
    "data.num_clients": 30,
    "selection.cohort_size": 30,
    "selection.clients_per_shard": 30,
    "model.name": "logistic_regression",
    "training.rounds": 10,
    "training.local_epochs": 1,
    "training.batch_size": 32,
    "training.learning_rate": 0.1,
    "aggregation.trim_fraction": 0.3,
    "aggregation.norm_bound": 1.0,
    "simulation.attack.scale": 30.0,
    "simulation.attack.noise_std": 1.0,
    "tracking.experiment": "fedpipe-robustness",
    "tracking.registered_model_name": "fedpipe-robustness",
}


@dataclasses.dataclass(frozen=True)
class Cell:
    seed: int
    defence: str
    attack: str
    attack_fraction: float
    attackers: int
    accuracy: float  # held-out accuracy after the last round
    worst_accuracy: float  # the lowest after any round (attacks can make the model swing)
    seconds: float


def cell_config(base: RunConfig, defence: str, attack: str, fraction: float) -> RunConfig:
    """The run of one cell: robust aggregators assume f = 30% of the cohort."""
    aggregator, _, screened = defence.partition("+")
    byzantine = 0 if aggregator in ("fedavg", "norm_bounding") else max(FRACTIONS)
    return base.replace(
        {
            "aggregation.rule": aggregator,
            "aggregation.byzantine_clients": math.floor(byzantine * base.selection.cohort_size),
            "aggregation.screening.policy": "exclude"
            if screened
            else base.aggregation.screening.policy,
            "simulation.attack.kind": attack if fraction > 0 else "none",
            "simulation.attack.fraction": fraction,
        }
    )


def run_cell(
    base: RunConfig, defence: str, attack: str, fraction: float, seed: int, scratch: Path
) -> Cell:
    """One simulation: a defence against an attack at a fraction of attackers, one seed."""
    from fedpipe.simulation import attacks
    from fedpipe.simulation.runner import simulate

    cfg = cell_config(base.replace({"seed": seed}), defence, attack, fraction)
    name = f"{defence}-{attack}-{round(fraction * 100)}pct-seed{seed}"
    started = time.perf_counter()
    result = simulate(cfg, scratch / name, run_name=name, register=False)
    return Cell(
        seed,
        defence,
        attack,
        fraction,
        len(attacks.attackers(cfg)),
        result.accuracy[-1],
        min(result.accuracy),
        time.perf_counter() - started,
    )


def run(
    base: RunConfig,
    defences: tuple[str, ...] = DEFENCES,
    seed_list: tuple[int, ...] | list[int] = (0,),
    output: Path | None = None,
    jobs: int = 1,
) -> list[Cell]:
    """Simulate every cell (no attack once per aggregator) once per seed, every seed of a
    cell before the next cell, in `jobs` worker processes; with an output folder, the
    tables so far are rewritten there after every simulation, so a long run that is
    stopped keeps what it finished (whole rows of seeds first)."""
    tasks = [
        (defence, attack, fraction, seed)
        for defence in defences
        for attack, fraction in _columns()
        for seed in seed_list
    ]
    done: dict[int, Cell] = {}

    def finished(index: int, cell: Cell) -> None:
        print(f"robustness: {cell}", flush=True)
        done[index] = cell
        if output is not None:
            write_tables([done[i] for i in sorted(done)], output)

    with tempfile.TemporaryDirectory(prefix="fedpipe-robustness-") as scratch:
        if jobs == 1:
            for index, task in enumerate(tasks):
                finished(index, run_cell(base, *task, Path(scratch)))
        else:
            from fedpipe.ops import tracking

            # Create the MLflow store and experiment here: workers racing to migrate a new
            # SQLite store fail ("duplicate column name").
            tracking.experiment_id(base)
            spawn = multiprocessing.get_context("spawn")  # no forked copies of loaded libraries
            with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn) as pool:
                futures = {
                    pool.submit(run_cell, base, *task, Path(scratch)): index
                    for index, task in enumerate(tasks)
                }
                for future in as_completed(futures):
                    finished(futures[future], future.result())
    return [done[i] for i in sorted(done)]


def _columns() -> list[tuple[str, float]]:
    return [("none", 0.0)] + [(a, p) for a in ATTACKS for p in FRACTIONS if p > 0]


def summary(cells: list[Cell]) -> dict[tuple[str, str, float], seeds.Spread]:
    """Accuracy after the last round over the seeds, per (defence, attack, fraction)."""
    groups = seeds.group(cells, lambda c: (c.defence, c.attack, c.attack_fraction))
    return {key: seeds.spread(c.accuracy for c in group) for key, group in groups.items()}


def to_markdown(cells: list[Cell]) -> str:
    """Aggregators as rows, attack x fraction as columns, accuracy (mean ± std over the
    seeds) in the cells."""
    by_key = summary(cells)
    columns = _columns()
    seed_list = list(dict.fromkeys(c.seed for c in cells))
    header = ["defence"] + [
        "no attack" if a == "none" else f"{a} {round(p * 100)}%" for a, p in columns
    ]
    lines = [
        f"Held-out accuracy after the last round, mean ± sample std over seeds "
        f"{', '.join(map(str, seed_list))}.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" + "|---:" * len(columns) + "|",
    ]
    for defence in dict.fromkeys(c.defence for c in cells):
        values = [by_key.get((defence, a, p)) for a, p in columns]
        lines.append(
            f"| {defence} | " + " | ".join("" if v is None else v.format() for v in values) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(cells: list[Cell]) -> Figure:
    """One panel per attack: mean accuracy against the attacker fraction, a line per
    defence, the band its seeds' range."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, len(ATTACKS), sharey=True)
    defences = list(dict.fromkeys(c.defence for c in cells))
    by_key = summary(cells)
    for ax, attack in zip(axes, ATTACKS, strict=True):
        for defence in defences:
            keys = [(defence, "none" if p == 0 else attack, p) for p in FRACTIONS]
            points = [(k[2] * 100, by_key[k]) for k in keys if k in by_key]
            xs = [x for x, _ in points]
            (line,) = ax.plot(xs, [s.mean for _, s in points], marker="o", label=defence)
            lows, highs = [s.low for _, s in points], [s.high for _, s in points]
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
        ax.set(title=attack, xlabel="attacking clients (%)", ylim=(0, 1), xticks=[0, 10, 30])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy after the last round")
    axes[-1].legend(loc="lower left", fontsize="small")
    return fig


def write_tables(cells: list[Cell], output: Path) -> tuple[Path, Path, Path]:
    """robustness.csv (a row per cell and seed), robustness.md (mean ± std) and the plot."""
    output.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = (
        output / "robustness.csv",
        output / "robustness.md",
        output / "robustness.png",
    )
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fld.name for fld in dataclasses.fields(Cell)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(c) for c in cells)
    md_path.write_text(to_markdown(cells))
    plot(cells).savefig(png_path, dpi=120)
    return csv_path, md_path, png_path


def write(cells: list[Cell], base: RunConfig, output: Path) -> tuple[Path, Path, Path]:
    """Write the tables and the plot, and log all three to MLflow with the mean and std of
    every cell as metrics."""
    from fedpipe.ops import tracking

    paths = write_tables(cells, output)
    metrics = {}
    for (defence, attack, fraction), spread in summary(cells).items():
        # MLflow metric names allow no "+": fedavg+screening becomes fedavg_screening.
        key = f"{defence.replace('+', '_')}/{attack}/{round(fraction * 100)}pct"
        metrics[f"accuracy/{key}"] = spread.mean
        metrics[f"accuracy_std/{key}"] = spread.std
    seed_list = list(dict.fromkeys(c.seed for c in cells))
    tracking.log_experiment(
        base,
        "robustness",
        list(paths),
        metrics=metrics,
        params={"seeds": seed_list},
        artifact_dir="robustness",
    )
    return paths
