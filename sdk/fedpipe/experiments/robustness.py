"""Robustness experiment: held-out accuracy after R rounds for each aggregator under each
attack at each fraction of attacking clients, on non-IID MNIST.

Every cell is a full `fedpipe.simulation.runner.simulate` run (the pipeline's own stages), so
the attacks go through local_train and the aggregators through the aggregate stage.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fedpipe.config import RunConfig

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


def run(base: RunConfig, defences: tuple[str, ...] = DEFENCES) -> list[Cell]:
    """Simulate every cell (no attack once per aggregator) and return their accuracies."""
    from fedpipe.simulation import attacks
    from fedpipe.simulation.runner import simulate

    cells = []
    conditions = [("none", 0.0)] + [(a, p) for a in ATTACKS for p in FRACTIONS if p > 0]
    with tempfile.TemporaryDirectory(prefix="fedpipe-robustness-") as scratch:
        for defence in defences:
            for attack, fraction in conditions:
                cfg = cell_config(base, defence, attack, fraction)
                name = f"{defence}-{attack}-{round(fraction * 100)}pct"
                started = time.perf_counter()
                result = simulate(cfg, Path(scratch) / name, run_name=name, register=False)
                cell = Cell(
                    defence,
                    attack,
                    fraction,
                    len(attacks.attackers(cfg)),
                    result.accuracy[-1],
                    min(result.accuracy),
                    time.perf_counter() - started,
                )
                print(f"robustness: {cell}", flush=True)
                cells.append(cell)
    return cells


def _columns() -> list[tuple[str, float]]:
    return [("none", 0.0)] + [(a, p) for a in ATTACKS for p in FRACTIONS if p > 0]


def to_markdown(cells: list[Cell]) -> str:
    """Aggregators as rows, attack x fraction as columns, accuracy in the cells."""
    by_key = {(c.defence, c.attack, c.attack_fraction): c.accuracy for c in cells}
    columns = _columns()
    header = ["defence"] + [
        "no attack" if a == "none" else f"{a} {round(p * 100)}%" for a, p in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(columns) + "|"]
    for defence in dict.fromkeys(c.defence for c in cells):
        values = [by_key.get((defence, a, p)) for a, p in columns]
        lines.append(
            f"| {defence} | " + " | ".join("" if v is None else f"{v:.4f}" for v in values) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(cells: list[Cell]) -> Figure:
    """One panel per attack: accuracy against the attacker fraction, a line per defence."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, len(ATTACKS), sharey=True)
    defences = list(dict.fromkeys(c.defence for c in cells))
    by_key = {(c.defence, c.attack, c.attack_fraction): c.accuracy for c in cells}
    for ax, attack in zip(axes, ATTACKS, strict=True):
        for defence in defences:
            points = [
                (p * 100, by_key[(defence, "none" if p == 0 else attack, p)])
                for p in FRACTIONS
                if (defence, "none" if p == 0 else attack, p) in by_key
            ]
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=defence)
        ax.set(title=attack, xlabel="attacking clients (%)", ylim=(0, 1), xticks=[0, 10, 30])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy after the last round")
    axes[-1].legend(loc="lower left", fontsize="small")
    return fig


def write(cells: list[Cell], base: RunConfig, output: Path) -> tuple[Path, Path, Path]:
    """Write the table (CSV + markdown) and the plot, and log all three to MLflow."""
    from fedpipe.ops import tracking

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
    # MLflow metric names allow no "+": fedavg+screening becomes fedavg_screening.
    metrics = {
        f"accuracy/{c.defence.replace('+', '_')}/{c.attack}/{round(c.attack_fraction * 100)}pct": (
            c.accuracy
        )
        for c in cells
    }
    tracking.log_experiment(
        base,
        "robustness",
        [csv_path, md_path, png_path],
        metrics=metrics,
        artifact_dir="robustness",
    )
    return csv_path, md_path, png_path
