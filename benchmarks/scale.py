"""Cohort-size scaling: seconds per simulated round and memory for cohorts of 10, 100 and
1,000 clients, with a small model, to show that memory follows the model, not the cohort.

Setting: the MNIST pool of configs/mnist.yaml (8,000 training examples) split IID over
the cohort, a small 2NN (two Dense(64) layers, 55,050 parameters, 215 KiB), every client
in every round, E=1, B=32, 10 clients per local-train shard, `--rounds` rounds of
`fedpipe.simulation.runner.simulate` (MLflow in SQLite in a temporary directory). With
1,000 clients each holds 8 examples. Each cohort runs in a fresh process:

- seconds per round: the median of the rounds after the first (which traces the graphs);
- aggregate's peak: the peak of the memory numpy and Python allocate while the aggregate
  stage runs (tracemalloc), as MiB and as a multiple of the model's size: where holding
  every update would grow with the cohort (1,000 models at 1,000 clients), streaming
  FedAvg keeps it to a few tens of models plus the per-client records of the outcome;
- the process's peak resident memory (TensorFlow's own ~0.5-1 GB included).

    .venv/bin/python benchmarks/scale.py [--cohorts 10 100 1000] [--rounds 2] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "scale.json"


def run_cohort(cohort: int, rounds: int, data_dir: Path) -> dict:
    """One cohort size, in this process: rounds of simulate, timed per stage call."""
    import contextlib
    import io

    from fedpipe import config as run_config
    from fedpipe import stages
    from fedpipe.simulation.runner import simulate

    aggregate_peaks: list[int] = []
    round_starts: list[float] = []
    original_aggregate, original_select = stages.aggregate, stages.select

    @functools.wraps(original_aggregate)
    def traced_aggregate(*args, **kwargs):
        tracemalloc.start()
        try:
            return original_aggregate(*args, **kwargs)
        finally:
            aggregate_peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    @functools.wraps(original_select)
    def timed_select(*args, **kwargs):
        round_starts.append(time.perf_counter())
        return original_select(*args, **kwargs)

    with tempfile.TemporaryDirectory(prefix="fedpipe-scale-") as tmp:
        config = run_config.load(REPO / "configs" / "mnist.yaml").replace(
            {
                "data.data_dir": str(data_dir.resolve()),
                "model.name": "mlp",
                "model.hidden_units": 64,
                "data.partitioner": "iid",
                "data.num_clients": cohort,
                "selection.cohort_size": cohort,
                "selection.clients_per_shard": 10,
                "training.rounds": rounds,
                "tracking.uri": f"sqlite:///{Path(tmp) / 'mlflow.db'}",
            }
        )
        stages.aggregate, stages.select = traced_aggregate, timed_select
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # a line per shard and round
                result = simulate(config, Path(tmp) / "sim", run_name="scale", register=False)
            ended = time.perf_counter()
        finally:
            stages.aggregate, stages.select = original_aggregate, original_select
    bounds = [*round_starts, ended]
    seconds = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    model_bytes = 4 * result.model.weights.size
    peak = max(aggregate_peaks)
    return {
        "cohort": cohort,
        "parameters": int(result.model.weights.size),
        "round_seconds": seconds,
        "median_round_seconds": statistics.median(seconds[1:] or seconds),
        "aggregate_peak_mib": peak / 2**20,
        "aggregate_peak_models": peak / model_bytes,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_accuracy": result.accuracy[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a cohort, in a subprocess
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_cohort(args.one, args.rounds, args.data_dir)))
        return
    rows = []
    for cohort in args.cohorts:
        command = [sys.executable, __file__, "--one", str(cohort), "--rounds", str(args.rounds)]
        command += ["--data-dir", str(args.data_dir)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"cohort {cohort}: done", flush=True)
    print("| cohort | s/round (median) | aggregate peak MiB | = x model | process peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['cohort']} | {r['median_round_seconds']:.2f} | {r['aggregate_peak_mib']:.2f} "
            f"| {r['aggregate_peak_models']:.1f} | {r['process_peak_rss_mib']:.0f} |"
        )
    growth = rows[-1]["aggregate_peak_models"] / rows[0]["aggregate_peak_models"]
    print(
        f"aggregate peak memory, cohort {rows[-1]['cohort']} vs {rows[0]['cohort']}: "
        f"{growth:.2f}x (model {rows[0]['parameters']:,} parameters)"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
