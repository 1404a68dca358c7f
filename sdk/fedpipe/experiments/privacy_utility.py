"""Privacy-utility trade-off of DP-FedAvg: held-out accuracy against epsilon for a few
noise multipliers, on many small clients (by default 500 MNIST clients, cohorts of 50).

Each setting is one in-process simulation (the same stage functions as the pipeline),
logged as its own MLflow run; a summary run holds the table and the plot.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from fedpipe.config import RunConfig
from fedpipe.ops import tracking
from fedpipe.privacy import accounting as privacy_accounting
from fedpipe.simulation.runner import simulate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "privacy-utility"
# Many small clients: the 10k MNIST test set over 500 IID clients (16 training examples
# each after the held-out split), cohorts of 50 (q = 0.1), delta below 1 / 500.
DEFAULTS = {
    "data.dataset": "mnist",
    "data.data_dir": "../shared/data/mnist",
    "data.partitioner": "iid",
    "data.num_clients": 500,
    "selection.cohort_size": 50,
    "selection.clients_per_shard": 50,
    "training.rounds": 30,
    "training.local_epochs": 2,
    "training.batch_size": 8,
    "aggregation.dp.delta": 1e-3,
    "tracking.experiment": "fedpipe-experiments",
    "tracking.registered_model_name": "fedpipe-privacy-utility",
}


@dataclasses.dataclass(frozen=True)
class Setting:
    label: str
    noise_multiplier: float | None  # None: no DP at all (no clipping, FedAvg weights)


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    noise_multiplier: float | None
    clip_norm: float | None
    epsilon: float  # at the config's delta; inf without noise
    delta: float
    rounds: int
    accuracy: float  # held-out accuracy after the last round
    accuracy_per_round: list[float]


def settings(noise_multipliers: list[float]) -> list[Setting]:
    """A non-private baseline, then one DP setting per noise multiplier."""
    return [Setting("no DP", None)] + [Setting(f"z={z:g}", z) for z in noise_multipliers]


def run_setting(base: RunConfig, setting: Setting, clip_norm: float, workdir: Path) -> Row:
    if setting.noise_multiplier is None:
        cfg = base.replace({"aggregation.dp.clip_norm": None})
    else:
        cfg = base.replace(
            {
                "aggregation.dp.clip_norm": clip_norm,
                "aggregation.dp.noise_multiplier": setting.noise_multiplier,
            }
        )
    result = simulate(
        cfg, workdir / setting.label, run_name=f"{NAME} {setting.label}", register=False
    )
    rounds = result.model.round_number
    spent = privacy_accounting.reported_epsilon(cfg, rounds)
    return Row(
        label=setting.label,
        noise_multiplier=setting.noise_multiplier,
        clip_norm=cfg.aggregation.dp.clip_norm,
        epsilon=math.inf if spent is None else spent,
        delta=cfg.aggregation.dp.delta,
        rounds=rounds,
        accuracy=result.accuracy[-1],
        accuracy_per_round=result.accuracy,
    )


def to_markdown(rows: list[Row], base: RunConfig) -> str:
    lines = [
        f"# Privacy-utility: {base.data.dataset}, {base.data.num_clients} clients, cohorts of "
        f"{base.selection.cohort_size} (q = {privacy_accounting.sampling_rate(base):g}), "
        f"{base.training.rounds} "
        f"rounds, {base.model.name}, {base.aggregation.dp.accountant.upper()} accountant",
        "",
        "| setting | noise multiplier | clip norm | epsilon | delta | rounds | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        z = "-" if r.noise_multiplier is None else f"{r.noise_multiplier:g}"
        clip = "-" if r.clip_norm is None else f"{r.clip_norm:g}"
        eps = "inf" if math.isinf(r.epsilon) else f"{r.epsilon:.3f}"
        lines.append(
            f"| {r.label} | {z} | {clip} | {eps} | {r.delta:g} | {r.rounds} | {r.accuracy:.4f} |"
        )
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    header = "setting,noise_multiplier,clip_norm,epsilon,delta,rounds,accuracy"
    lines = [header] + [
        f"{r.label},{'' if r.noise_multiplier is None else r.noise_multiplier},"
        f"{'' if r.clip_norm is None else r.clip_norm},{r.epsilon},{r.delta},{r.rounds},"
        f"{r.accuracy}"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def figure(rows: list[Row]) -> Figure:
    """Left: final accuracy against epsilon (no-DP as a line); right: accuracy per round."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    tradeoff, curves = fig.subplots(1, 2)
    private = [r for r in rows if not math.isinf(r.epsilon)]
    if private:
        tradeoff.plot([r.epsilon for r in private], [r.accuracy for r in private], marker="o")
        for r in private:
            tradeoff.annotate(
                r.label, (r.epsilon, r.accuracy), xytext=(4, -10), textcoords="offset points"
            )
        tradeoff.set_xscale("log")
    for r in rows:
        if math.isinf(r.epsilon):
            tradeoff.axhline(r.accuracy, linestyle="--", color="gray", label=f"{r.label} (eps=inf)")
        curves.plot(range(1, len(r.accuracy_per_round) + 1), r.accuracy_per_round, label=r.label)
    delta = rows[0].delta if rows else 0
    tradeoff.set(xlabel=f"epsilon at delta={delta:g}", ylabel="held-out accuracy", ylim=(0, 1))
    tradeoff.grid(alpha=0.3)
    tradeoff.legend(loc="lower right")
    curves.set(xlabel="round", ylabel="held-out accuracy", ylim=(0, 1))
    curves.grid(alpha=0.3)
    curves.legend(loc="lower right", fontsize=8)
    return fig


def run(
    base: RunConfig, noise_multipliers: list[float], clip_norm: float, output: Path
) -> list[Row]:
    """Run every setting, write table.csv, table.md and privacy_utility.png to `output`,
    and log them to a summary MLflow run."""
    output.mkdir(parents=True, exist_ok=True)
    rows = [
        run_setting(base, s, clip_norm, output / "simulations") for s in settings(noise_multipliers)
    ]
    (output / "table.csv").write_text(to_csv(rows))
    (output / "table.md").write_text(to_markdown(rows, base))
    fig = figure(rows)
    fig.savefig(output / "privacy_utility.png", dpi=120)
    metrics = {}
    for r in rows:
        key = r.label.replace("=", "_").replace(" ", "_")  # MLflow metric-name characters
        metrics[f"accuracy/{key}"] = r.accuracy
        if not math.isinf(r.epsilon):
            metrics[f"epsilon/{key}"] = r.epsilon
    files = [output / name for name in ("table.csv", "table.md", "privacy_utility.png")]
    tracking.log_experiment(base, NAME, files, metrics=metrics)
    return rows
