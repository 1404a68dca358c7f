"""What differential privacy costs in time: local training with DP-SGD against plain SGD,
the DP-FedAvg aggregate against plain FedAvg, and one accountant call.

Setting: configs/mnist.yaml (2NN with 200 hidden units, B=32), client 0's data; a cohort
of 50 synthetic updates of the model's size for the aggregate; the 500-client, cohort-50
setting of the privacy-utility experiment for the accountant.

    .venv/bin/python benchmarks/dp_overhead.py [--repeats 5] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fedpipe import config as run_config
from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import RoundContext
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.artifacts.wire import WeightsSpec
from fedpipe.data import partition
from fedpipe.privacy import accounting as privacy_accounting
from fedpipe.training import trainer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "dp_overhead.json"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn over `repeats` calls, after one warm-up call (tracing)."""
    return median_wall_and_cpu(fn, repeats)[0]


def median_wall_and_cpu(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and process CPU seconds of fn over `repeats` calls, after a warm-up call.
    On a shared machine the CPU seconds move much less with other processes' load."""
    fn()
    times, cpu_times = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu)
    return statistics.median(times), statistics.median(cpu_times)


def local_epoch_seconds(cfg: run_config.RunConfig, repeats: int) -> float:
    model_trainer = trainer.for_config(cfg)
    x, y = partition.client_data(cfg, 0)
    weights = model_trainer.initial_weights()
    return median_seconds(
        lambda: model_trainer.train(
            weights,
            x,
            y,
            epochs=1,
            batch_size=cfg.training.batch_size,
            learning_rate=cfg.training.learning_rate,
            mu=0.0,
            seed=[0, 1, 0],
        ),
        repeats,
    ) / max(1, len(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args()

    base = run_config.load(
        REPO / "configs" / "mnist.yaml",
        {"data.data_dir": args.data_dir},
    )
    plain_s = local_epoch_seconds(base, args.repeats)
    dp_sgd_s = local_epoch_seconds(
        base.replace({"training.dp_sgd_clip_norm": 1.0, "training.dp_sgd_noise_multiplier": 1.0}),
        args.repeats,
    )

    size = trainer.for_config(base).spec.size
    rng = np.random.default_rng(0)
    updates = [
        ClientUpdate.of(
            k,
            rng.normal(size=size).astype(np.float32),
            num_examples=100,
            train_loss=0,
            duration_s=0,
        )
        for k in range(50)
    ]
    dp_cfg = run_config.from_mapping(
        {
            "data.num_clients": 500,
            "selection.cohort_size": 50,
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.noise_multiplier": 1.0,
            "aggregation.dp.delta": 1e-3,
        }
    )
    size = updates[0].vector.size
    zero = np.zeros(size, np.float32)

    def aggregate(cfg) -> None:
        chain = build_chain(cfg)
        spec = WeightsSpec(("w",), ((size,),))
        rnd = RoundContext(1, list(range(len(updates))), {}, {}, spec, secure=False)
        chain.aggregate_plain(updates, rnd, zero)

    plain_cfg = dp_cfg.replace(
        {"aggregation.dp.clip_norm": None, "aggregation.dp.noise_multiplier": 0.0}
    )
    fedavg_s, fedavg_cpu = median_wall_and_cpu(lambda: aggregate(plain_cfg), args.repeats)
    dp_fedavg_s, dp_fedavg_cpu = median_wall_and_cpu(lambda: aggregate(dp_cfg), args.repeats)
    # Epsilon: the first call of a process computes the per-step RDP (cached after), the
    # later ones (every round of a run after the first) only compose and convert it.
    privacy_accounting._rdp_per_step.cache_clear()
    started = time.perf_counter()
    privacy_accounting.epsilon(dp_cfg, 100)
    rdp_first_s = time.perf_counter() - started
    rdp_s = median_seconds(lambda: privacy_accounting.epsilon(dp_cfg, 100), args.repeats)
    pld_s = median_seconds(
        lambda: privacy_accounting.epsilon(
            dp_cfg.replace({"aggregation.dp.accountant": "pld"}), 100
        ),
        args.repeats,
    )

    results = {
        "local_train_us_per_example": {"sgd": plain_s * 1e6, "dp_sgd": dp_sgd_s * 1e6},
        "aggregate_ms_cohort_50": {
            "fedavg": fedavg_s * 1e3,
            "dp_fedavg": dp_fedavg_s * 1e3,
            "fedavg_cpu": fedavg_cpu * 1e3,
            "dp_fedavg_cpu": dp_fedavg_cpu * 1e3,
        },
        "epsilon_after_100_rounds_ms": {
            "rdp": rdp_s * 1e3,
            "rdp_first_call": rdp_first_s * 1e3,
            "pld": pld_s * 1e3,
        },
        "load_average": os.getloadavg(),
        "model_parameters": size,
    }
    print(f"model parameters: {size:,}")
    print("| what | plain | DP | DP / plain |")
    print("|---|---:|---:|---:|")
    print(
        f"| local training, us per example (B={base.training.batch_size}) | {plain_s * 1e6:.1f} | "
        f"{dp_sgd_s * 1e6:.1f} | {dp_sgd_s / plain_s:.1f}x |"
    )
    print(
        f"| aggregate of 50 updates, ms | {fedavg_s * 1e3:.1f} | {dp_fedavg_s * 1e3:.1f} | "
        f"{dp_fedavg_s / fedavg_s:.1f}x |"
    )
    print(
        f"| aggregate of 50 updates, CPU ms | {fedavg_cpu * 1e3:.1f} | {dp_fedavg_cpu * 1e3:.1f} "
        f"| {dp_fedavg_cpu / fedavg_cpu:.1f}x |"
    )
    verdict = "met" if dp_fedavg_s <= 2 * fedavg_s else "NOT met"
    print(f"target DP aggregate <= 2x plain: {dp_fedavg_s / fedavg_s:.2f}x -> {verdict}")
    print(
        f"| epsilon after 100 rounds, ms: RDP {rdp_s * 1e3:.1f} (first call of the process "
        f"{rdp_first_s * 1e3:.0f}), PLD {pld_s * 1e3:.1f} | | | |"
    )
    print(f"load average {[round(x, 2) for x in os.getloadavg()]}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
