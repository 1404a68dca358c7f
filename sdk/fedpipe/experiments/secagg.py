"""Does secure aggregation cost accuracy? The same federated run with secure aggregation
off, SecAgg and SecAgg+ (with and without dropouts after key sharing), compared round by
round: the price of clipping and fixed point, and of the clients lost to dropouts."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.config import RunConfig
from fedpipe.ops import tracking
from fedpipe.simulation.runner import simulate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VARIANTS = (
    ("plain", {"aggregation.secure.mode": "off"}),
    ("secagg", {"aggregation.secure.mode": "secagg"}),
    ("secagg+", {"aggregation.secure.mode": "secagg+"}),
    (
        "secagg+ 20% dropout",
        {"aggregation.secure.mode": "secagg+", "simulation.faults.secagg_dropout": 0.2},
    ),
)


@dataclasses.dataclass(frozen=True)
class VariantResult:
    name: str
    accuracy: list[float]  # held-out accuracy after each round
    dropouts_recovered: int  # over all rounds
    bytes_per_client: float  # mean over rounds (0 without secure aggregation)


def run(config: RunConfig, out_dir: Path) -> list[VariantResult]:
    """Simulate every variant of `config`, then write and log the table and the plot."""
    results = []
    for name, changes in VARIANTS:
        workdir = out_dir / "runs" / _slug(name)
        sim = simulate(config.replace(changes), workdir, run_name=name, register=False)
        reports = [
            AggregationOutcome.load(workdir / f"round_{n:03d}" / "outcome.json").metrics
            for n in range(1, config.training.rounds + 1)
        ]
        reports = [r for r in reports if "secagg/survivors" in r]
        results.append(
            VariantResult(
                name,
                sim.accuracy,
                int(sum(r["secagg/dropouts_recovered"] for r in reports)),
                sum(r["secagg/bytes_per_client"] for r in reports) / len(reports)
                if reports
                else 0.0,
            )
        )
    _write(results, out_dir)
    tracking.log_experiment(
        config,
        "secagg",
        [out_dir / name for name in ("secagg.csv", "secagg.md", "secagg.png")],
        metrics={f"final_accuracy/{_slug(r.name)}": r.accuracy[-1] for r in results},
    )
    return results


def _slug(name: str) -> str:
    """A variant name as MLflow metric names and directories allow it."""
    return name.replace("+", "_plus").replace("%", "pct").replace(" ", "_")


def table_rows(results: list[VariantResult]) -> list[dict]:
    plain = results[0].accuracy[-1]
    return [
        {
            "variant": r.name,
            "final_accuracy": round(r.accuracy[-1], 4),
            "vs_plain_points": round(100 * (r.accuracy[-1] - plain), 2),
            "dropouts_recovered": r.dropouts_recovered,
            "kib_per_client_per_round": round(r.bytes_per_client / 1024, 1),
        }
        for r in results
    ]


def plot(results: list[VariantResult]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    for r in results:
        ax.plot(range(1, len(r.accuracy) + 1), r.accuracy, marker="o", label=r.name)
    ax.set(xlabel="round", ylabel="held-out accuracy", title="Secure aggregation vs plain FedAvg")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def _write(results: list[VariantResult], out_dir: Path) -> None:
    rows = table_rows(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "secagg.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|---|" + "---:|" * (len(keys) - 1)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    (out_dir / "secagg.md").write_text("\n".join(lines) + "\n")
    plot(results).savefig(out_dir / "secagg.png", dpi=120)
