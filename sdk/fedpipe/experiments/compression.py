"""Accuracy against bytes per client per round, for each update compressor.

Each (compressor, seed) cell is one in-process simulation of the MNIST reference setting
(configs/mnist.yaml) with ``compression`` set; the bytes are the lengths of the payloads
the clients actually produced (local train's ``bytes.jsonl``), not an estimate.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from fedpipe.config import RunConfig
from fedpipe.experiments import seeds
from fedpipe.ops import tracking
from fedpipe.simulation.runner import simulate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "compression"
KINDS = ("none", "q8", "q4", "topk")


@dataclasses.dataclass(frozen=True)
class Cell:
    kind: str
    seed: int
    accuracy: float  # held-out accuracy after the last round
    bytes_per_client_round: float  # mean payload length over every update sent
    float32_bytes: int  # the uncompressed vector's 4 * d


def settings(base: RunConfig, kind: str, topk_fraction: float) -> RunConfig:
    """The one place this experiment reads or writes compression config fields."""
    return base.replace(
        {
            "aggregation.compression.kind": kind,
            "aggregation.compression.topk_fraction": topk_fraction,
        }
    )


def run_cell(base: RunConfig, kind: str, topk_fraction: float, seed: int, work: Path) -> Cell:
    cfg = settings(base.replace({"seed": seed}), kind, topk_fraction)
    workdir = work / f"{kind}-seed{seed}"
    shutil.rmtree(workdir, ignore_errors=True)  # a residual left from an earlier run is stale
    result = simulate(cfg, workdir, run_name=f"{NAME} {kind} seed {seed}", register=False)
    float32_bytes = 4 * int(result.model.weights.size)
    log = workdir / "clients" / "bytes.jsonl"  # simulate's clients keep it in their folder
    if kind == "none":  # no payload is built: the float32 vector as the shard file holds it
        sent = float(float32_bytes)
    else:
        records = [json.loads(line) for line in log.read_text().splitlines()]
        sent = statistics.fmean(r["bytes"] for r in records)
    return Cell(kind, seed, result.accuracy[-1], sent, float32_bytes)


def label(kind: str, topk_fraction: float) -> str:
    return f"topk {topk_fraction:g}" if kind == "topk" else kind


def summary(cells: list[Cell], topk_fraction: float) -> list[dict]:
    """Per compressor: mean and spread of accuracy over seeds, bytes, and both against none."""
    groups = seeds.group(cells, lambda c: c.kind)
    base_acc = seeds.spread(c.accuracy for c in groups["none"]).mean if "none" in groups else None
    rows = []
    for kind, group in groups.items():
        accuracy = seeds.spread(c.accuracy for c in group)
        sent = statistics.fmean(c.bytes_per_client_round for c in group)
        mean = accuracy.mean
        rows.append(
            {
                "compression": label(kind, topk_fraction),
                "seeds": len(group),
                "accuracy_mean": mean,
                "accuracy_std": accuracy.std,
                "bytes_per_client_round": sent,
                "reduction": group[0].float32_bytes / sent,
                "accuracy_minus_none": None if base_acc is None else mean - base_acc,
            }
        )
    return rows


def to_markdown(rows: list[dict], base: RunConfig, seed_list: list[int]) -> str:
    lines = [
        f"# Compression: {base.data.dataset}, {base.data.num_clients} clients, "
        f"{base.data.partitioner}, {base.training.rounds} rounds, {base.model.name}, "
        f"E={base.training.local_epochs}, B={base.training.batch_size}, "
        f"seeds {', '.join(map(str, seed_list))}",
        "",
        "| compression | seeds | accuracy (mean ± std) | bytes / client / round "
        "| fewer bytes | accuracy - none (points) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        diff = r["accuracy_minus_none"]
        lines.append(
            f"| {r['compression']} | {r['seeds']} | {r['accuracy_mean']:.4f} ± "
            f"{r['accuracy_std']:.4f} | {r['bytes_per_client_round']:,.0f} | "
            f"{r['reduction']:.2f}x | {'-' if diff is None else f'{100 * diff:+.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def figure(cells: list[Cell], topk_fraction: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for kind in dict.fromkeys(c.kind for c in cells):
        group = [c for c in cells if c.kind == kind]
        ax.scatter(
            [c.bytes_per_client_round for c in group],
            [c.accuracy for c in group],
            label=label(kind, topk_fraction),
        )
    ax.set_xscale("log")
    ax.set(xlabel="bytes per client per round", ylabel="final held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def run(
    base: RunConfig, kinds: list[str], topk_fraction: float, seed_list: list[int], output: Path
) -> list[dict]:
    """Run every cell, write cells.json, table.md and compression.png, log them to MLflow."""
    output.mkdir(parents=True, exist_ok=True)
    cells = [
        run_cell(base, kind, topk_fraction, seed, output / "simulations")
        for seed in seed_list
        for kind in kinds
    ]
    rows = summary(cells, topk_fraction)
    (output / "cells.json").write_text(json.dumps([dataclasses.asdict(c) for c in cells], indent=1))
    (output / "table.md").write_text(to_markdown(rows, base, seed_list))
    figure(cells, topk_fraction).savefig(output / "compression.png", dpi=120)
    metrics = {}
    for r in rows:
        key = r["compression"].replace(" ", "_")
        metrics[f"accuracy/{key}"] = r["accuracy_mean"]
        metrics[f"bytes_per_client_round/{key}"] = r["bytes_per_client_round"]
    files = [output / n for n in ("cells.json", "table.md", "compression.png")]
    tracking.log_experiment(
        base,
        NAME,
        files,
        metrics=metrics,
        params={"seeds": seed_list, "topk_fraction": topk_fraction},
    )
    return rows
