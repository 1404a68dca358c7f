"""What training per client costs against the floor, measured in alternation.

A round's training on the MNIST reference setting is ten graph calls, one per client,
which `simulate` runs in two shard threads (five consecutive clients each, every thread
with its own model). The compute floor is one call over all 8,000 examples
(round_time.py). This benchmark times, repetition after repetition in one process:

  floor      one call over the whole training pool
  serial     the ten clients' calls one after another, in one thread
  shards     the same calls in one thread per shard, as simulate trains them

Taken in alternation, a machine whose speed drifts moves all three alike, and each
repetition's ratio compares calls made within a second of each other. No stage runs
around the calls (no artifacts, no MLflow): what is left of a round's time above the
floor that is not here belongs to the stages. Pinned to one core (`taskset -c 0`), the
serial/floor ratio is what calling per client costs with nothing to run in parallel.

    .venv/bin/python benchmarks/client_calls.py [--repeats 10] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from round_time import DEFAULT_DATA_DIR, one_epoch, reference_config

from fedpipe.clients import selection
from fedpipe.config import RunConfig
from fedpipe.data import partition
from fedpipe.ops import machine

if TYPE_CHECKING:
    from fedpipe.training.trainer import Trainer

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "client_calls.json"
Client = tuple[int, np.ndarray, np.ndarray]  # id, examples, labels


def train_clients(
    config: RunConfig, model_trainer: Trainer, weights: np.ndarray, clients: list[Client], rep: int
) -> None:
    """Each client's epoch, one graph call each, in order: a shard's training in a round."""
    for client_id, x, y in clients:
        one_epoch(config, model_trainer, weights, x, y, [config.seed, rep, client_id])


def measure(config: RunConfig, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of the three ways, `repeats` times each in alternation, after one
    warm-up of each (which traces every thread's model)."""
    from fedpipe.training import trainer

    ids = list(range(config.data.num_clients))
    data = {c: (c, *partition.client_data(config, c)) for c in ids}
    clients = list(data.values())
    shard_ids = selection.split_into_shards(ids, config.selection.clients_per_shard)
    shards = [[data[c] for c in shard] for shard in shard_ids]
    trainers = []
    for slot in range(len(shards)):
        with trainer.worker_slot(slot):
            trainers.append(trainer.for_config(config))
    pool, weights = trainers[0].data, trainers[0].initial_weights()

    def floor(rep: int) -> None:
        one_epoch(config, trainers[0], weights, pool.x_train, pool.y_train, [config.seed, rep])

    def serial(rep: int) -> None:
        train_clients(config, trainers[0], weights, clients, rep)

    def in_shards(rep: int) -> None:
        threads = [
            threading.Thread(target=train_clients, args=(config, t, weights, shard, rep))
            for t, shard in zip(trainers, shards, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    ways = {"floor": floor, "serial": serial, "shards": in_shards}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for rep in range(repeats + 1):
        for name, way in ways.items():
            started = time.perf_counter()
            way(rep)
            if rep:  # repetition 0 is the warm-up
                seconds[name].append(time.perf_counter() - started)
    return seconds


def report(seconds: dict[str, list[float]]) -> str:
    floor = seconds["floor"]
    lines = [f"{'':<10}{'median s':>10}{'min s':>8}{'max s':>8}{'/ floor, per repetition':>34}"]
    for name, wall in seconds.items():
        ratios = [w / f for w, f in zip(wall, floor, strict=True)]
        spread = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        lines.append(
            f"{name:<10}{statistics.median(wall):>10.3f}{min(wall):>8.3f}{max(wall):>8.3f}"
            + ("" if name == "floor" else f"{spread:>34}")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="repetitions (default 10)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="MNIST IDX files")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON path")
    args = parser.parse_args(argv)
    cores = machine.usable_cores()
    with tempfile.TemporaryDirectory(prefix="fedpipe-bench-") as tmp:
        config = reference_config(args.data_dir, Path(tmp), 1)
        print(f"{args.repeats} repetitions on {cores} core(s), in alternation", flush=True)
        seconds = measure(config, args.repeats)
    print(report(seconds))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    results = {"cores": cores, "load_average": os.getloadavg(), "seconds": seconds}
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
