"""Seconds per federated round on the MNIST reference setting: fedpipe against a plain loop.

Measures, for configs/mnist.yaml (MNIST 10k test set, 8,000 train / 2,000 held out,
10 clients, Dirichlet 0.5, 2NN with 200 hidden units, E=1, B=32, SGD 0.1, every client
in every round):

  simulate  `fedpipe simulate` in-process (fedpipe.simulation.runner.simulate, MLflow in SQLite)
  floor     one call of the trainer's compiled whole-epoch graph over all 8,000 training
            examples at B=32 (same 2NN, same SGD, no federation): the compute floor of a
            round's training; the target is simulate <= 1.3x floor. Measured three ways:
            with one intra-op thread, as fedpipe trains, in this process just before and
            just after the simulation (a shared machine drifts by tens of percent within
            a minute), and with TensorFlow's default of one per core, in a child process
            (the setting is read when TensorFlow starts). The fastest is the floor
  plain     a single-process Keras FedAvg loop written here (model.fit per client)
  kfp       the same pipeline through kfp.local, to price one pipeline task

The first round of each loop includes building the model and tracing its steps (for
simulate, the second shard thread's model: the floor measured first built the first);
medians over rounds are robust to that one-off warm-up, which is reported separately.

    .venv/bin/python benchmarks/round_time.py [--rounds 8] [--skip-kfp] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fedpipe import config as run_config
from fedpipe import stages
from fedpipe.config import RunConfig
from fedpipe.data import datasets, partition
from fedpipe.ops import machine

if TYPE_CHECKING:  # TensorFlow loads only where a benchmark trains
    from fedpipe.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
CONFIG_PATH = REPO / "configs" / "mnist.yaml"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "round_time.json"
# The stages simulate() calls once per round, in order; select opens a round, evaluate closes it.
ROUND_STAGES = ("select", "broadcast", "local_train", "aggregate", "evaluate")


@dataclasses.dataclass(frozen=True)
class LoopTiming:
    """Per-round wall seconds of one federated loop and its final held-out accuracy."""

    round_seconds: list[float]
    total_seconds: float
    final_accuracy: float

    @property
    def median(self) -> float:
        return statistics.median(self.round_seconds)

    @property
    def setup(self) -> float:
        """Seconds before the first round (simulate: the initialize stage; plain: build)."""
        return self.total_seconds - sum(self.round_seconds)

    @property
    def warmup(self) -> float:
        """How much longer the first round took than the median (model build, tracing)."""
        return self.round_seconds[0] - self.median

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "median_round_seconds": self.median,
            "warmup_seconds": self.warmup,
            "setup_seconds": self.setup,
        }


@dataclasses.dataclass(frozen=True)
class SimulationTiming(LoopTiming):
    mlflow_round_seconds: list[float]  # evaluate's `round_seconds` metric: select..scoring
    accuracy: list[float]  # held-out accuracy after each round: the curve must not move
    stage_seconds: dict[str, float]  # median per round of each stage (first start to last end)
    round_cpu_seconds: list[float]  # process CPU seconds (all threads) of each round


@dataclasses.dataclass(frozen=True)
class PipelineTiming:
    rounds: int
    kfp_seconds: float  # run_pipeline: compile + every task, initialize to register
    simulate_seconds: float  # simulate() of the same rounds, register included
    tasks: int

    @property
    def overhead_per_task(self) -> float:
        return (self.kfp_seconds - self.simulate_seconds) / self.tasks

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "overhead_per_task_seconds": self.overhead_per_task}


def reference_config(data_dir: Path, workdir: Path, rounds: int) -> RunConfig:
    """configs/mnist.yaml with the data found from this checkout and MLflow in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    return run_config.load(CONFIG_PATH).replace(
        {
            "data.data_dir": str(data_dir.resolve()),
            "training.rounds": rounds,
            "tracking.uri": f"sqlite:///{(workdir / 'mlflow.db').resolve()}",
        }
    )


@contextlib.contextmanager
def timed_stages() -> Iterator[dict[str, list[tuple[float, float, float, float]]]]:
    """Record (wall start, wall end, CPU start, CPU end) of every call of each
    fedpipe.stages function while inside (CPU: the process's, all threads).

    simulate() looks the stages up on the fedpipe.stages module at each call, so wrapping
    the module attributes times exactly what it runs, with no copy of its loop here.
    """
    calls: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    originals = {name: getattr(stages, name) for name in ROUND_STAGES}

    def timing(name: str, stage: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(stage)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return stage(*args, **kwargs)
            finally:
                calls[name].append((started, time.perf_counter(), cpu, time.process_time()))

        return timed

    for name, stage in originals.items():
        setattr(stages, name, timing(name, stage))
    try:
        yield calls
    finally:
        for name, stage in originals.items():
            setattr(stages, name, stage)


def time_simulation(config: RunConfig, workdir: Path) -> SimulationTiming:
    """simulate() for config.training.rounds rounds; a round is select's start to evaluate's end."""
    from fedpipe.ops import tracking
    from fedpipe.simulation.runner import simulate

    with timed_stages() as calls:
        started = time.perf_counter()
        result = simulate(config, workdir / "simulation", run_name="round-time", register=False)
        total = time.perf_counter() - started
    stage_medians, spans = {}, {}
    for name in ROUND_STAGES:
        if not calls[name] or len(calls[name]) % config.training.rounds:
            raise RuntimeError(
                f"stage {name} ran {len(calls[name])} times in {config.training.rounds} rounds: "
                "simulate() no longer calls it through the fedpipe.stages module?"
            )
        # Shards may train at the same time: a stage's round is its first start to last end.
        by_round = np.reshape(calls[name], (config.training.rounds, -1, 4))
        spans[name] = by_round
        stage_medians[name] = float(
            np.median(by_round[:, :, 1].max(axis=1) - by_round[:, :, 0].min(axis=1))
        )
    # A round: select's start to evaluate's end.
    per_round = spans["evaluate"][:, -1, 1] - spans["select"][:, 0, 0]
    cpu_round = spans["evaluate"][:, -1, 3] - spans["select"][:, 0, 2]
    history = tracking.client(config).get_metric_history(result.mlflow_run_id, "round_seconds")
    return SimulationTiming(
        round_seconds=per_round.tolist(),
        total_seconds=total,
        final_accuracy=result.accuracy[-1],
        mlflow_round_seconds=[m.value for m in sorted(history, key=lambda m: m.step)],
        stage_seconds=stage_medians,
        accuracy=result.accuracy,
        round_cpu_seconds=cpu_round.tolist(),
    )


FLOOR_TARGET = 1.3  # simulate's median round / the floor


def time_floor(config: RunConfig, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of one epoch over the whole training pool in one graph call,
    `repeats` times (after one warm-up call): what a round's training costs without
    federation."""
    from fedpipe.training import trainer

    model_trainer = trainer.for_config(config)
    data, weights = model_trainer.data, model_trainer.initial_weights()
    seconds, cpu_seconds = [], []
    for i in range(repeats + 1):
        started, cpu = time.perf_counter(), time.process_time()
        one_epoch(config, model_trainer, weights, data.x_train, data.y_train, [config.seed, i])
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu)
    return seconds[1:], cpu_seconds[1:]


def one_epoch(
    config: RunConfig,
    model_trainer: Trainer,
    weights: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    seed: list[int],
) -> None:
    """One graph call of the trainer: an epoch over (x, y) from `weights`, with the
    reference setting's SGD and no FedProx term (the floor's call and a client's)."""
    model_trainer.train(
        weights,
        x,
        y,
        epochs=config.training.local_epochs,
        batch_size=config.training.batch_size,
        learning_rate=config.training.learning_rate,
        mu=0.0,
        seed=seed,
    )


def time_floor_with_threads(args: argparse.Namespace, threads: int) -> tuple[list, list]:
    """time_floor in a child process whose TensorFlow runs `threads` intra-op threads."""
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads)}
    command = [sys.executable, __file__, "--floor-only", "--rounds", str(args.rounds)]
    command += ["--data-dir", str(args.data_dir)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    seconds, cpu_seconds = json.loads(out.strip().splitlines()[-1])
    return seconds, cpu_seconds


@dataclasses.dataclass(frozen=True)
class Floor:
    """The compute floor measured several ways: (wall, CPU) seconds by setting; the
    fastest median counts, so no one way of measuring it can flatter the ratio."""

    by_setting: dict[str, tuple[list[float], list[float]]]

    @property
    def setting(self) -> str:
        return min(self.by_setting, key=lambda k: statistics.median(self.by_setting[k][0]))

    @property
    def seconds(self) -> list[float]:
        return self.by_setting[self.setting][0]

    @property
    def cpu_seconds(self) -> list[float]:
        return self.by_setting[self.setting][1]


def time_plain_keras(config: RunConfig) -> LoopTiming:
    """FedAvg by hand in one process: one compiled Keras model, fit per client, mean."""
    import keras

    data = datasets.load(config)
    clients = [partition.client_data(config, cid) for cid in range(config.data.num_clients)]
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(data.num_features,)),
            keras.layers.Dense(config.model.hidden_units, activation="relu"),
            keras.layers.Dense(config.model.hidden_units, activation="relu"),
            keras.layers.Dense(data.num_classes, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(config.training.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    global_weights = model.get_weights()
    round_seconds, accuracy = [], 0.0
    for _ in range(config.training.rounds):
        round_started = time.perf_counter()
        client_weights, sizes = [], []
        for x, y in clients:
            model.set_weights(global_weights)
            model.fit(
                x,
                y,
                epochs=config.training.local_epochs,
                batch_size=config.training.batch_size,
                shuffle=True,
                verbose=0,
            )
            client_weights.append(model.get_weights())
            sizes.append(len(x))
        share = np.asarray(sizes, dtype=np.float64) / sum(sizes)
        global_weights = [
            sum(s * w[i] for s, w in zip(share, client_weights, strict=True)).astype(np.float32)
            for i in range(len(global_weights))
        ]
        model.set_weights(global_weights)
        _, accuracy = model.evaluate(data.x_heldout, data.y_heldout, batch_size=4096, verbose=0)
        round_seconds.append(time.perf_counter() - round_started)
    return LoopTiming(round_seconds, time.perf_counter() - started, float(accuracy))


def time_pipeline(config: RunConfig, workdir: Path) -> PipelineTiming:
    """kfp.local against simulate() for the same rounds; the difference priced per task."""
    from fedpipe.ops.local_run import run_pipeline
    from fedpipe.simulation.runner import simulate

    pipeline_root = workdir / "pipeline_root"
    started = time.perf_counter()
    run_pipeline(config, pipeline_root)  # TaskLogs.capture keeps kfp.local's print swap off
    kfp_seconds = time.perf_counter() - started
    tasks = len(list(pipeline_root.rglob("executor_output.json")))

    sim_config = config.replace(
        {"tracking.uri": f"sqlite:///{(workdir / 'simulation-mlflow.db').resolve()}"}
    )
    started = time.perf_counter()
    simulate(sim_config, workdir / "simulation", run_name="round-time-kfp-baseline")
    simulate_seconds = time.perf_counter() - started
    return PipelineTiming(config.training.rounds, kfp_seconds, simulate_seconds, tasks)


def report(
    simulation: SimulationTiming,
    plain: LoopTiming | None,
    pipeline: PipelineTiming | None,
    floors: Floor,
) -> str:
    floor, floor_cpu = floors.seconds, floors.cpu_seconds
    floor_median = statistics.median(floor)
    floor_ratio = simulation.median / floor_median
    cpu_ratio = statistics.median(simulation.round_cpu_seconds) / statistics.median(floor_cpu)
    loops = [simulation] + ([plain] if plain else [])
    rows = [
        ("", "simulate", "plain Keras" if plain else ""),
        ("median s/round", *[f"{t.median:.3f}" for t in loops]),
        (
            "  min / max",
            *[f"{min(t.round_seconds):.3f} / {max(t.round_seconds):.3f}" for t in loops],
        ),
        ("first-round warm-up s", *[f"{t.warmup:.3f}" for t in loops]),
        ("setup before round 1 s", *[f"{t.setup:.2f}" for t in loops]),
        ("total s", *[f"{t.total_seconds:.2f}" for t in loops]),
        ("final accuracy", *[f"{t.final_accuracy:.4f}" for t in loops]),
    ]
    lines = [f"{a:<24}{b:>18}{c:>18}" for a, b, c, *_ in [(*r, "") for r in rows]]
    lines += [
        "",
        f"compute floor (one epoch over all training examples, {len(floor)} times), median:",
        *[
            f"  {setting + ':':<52}{statistics.median(wall):.3f} s"
            + ("  <- floor" if setting == floors.setting else "")
            for setting, (wall, _) in floors.by_setting.items()
        ],
        f"ratio simulate / floor (median s/round): {floor_ratio:.2f}  "
        f"({'meets' if floor_ratio <= FLOOR_TARGET else 'MISSES'} the target <= {FLOOR_TARGET})",
        f"CPU seconds (process, all threads), median: round "
        f"{statistics.median(simulation.round_cpu_seconds):.3f}, floor "
        f"{statistics.median(floor_cpu):.3f}, ratio {cpu_ratio:.2f} (less sensitive to "
        "other processes' load than wall time; the round may use both cores at once)",
        f"simulate accuracy by round: {', '.join(f'{a:.4f}' for a in simulation.accuracy)}",
    ]
    if plain:
        ratio = simulation.median / plain.median
        verdict = "meets" if ratio <= 1.0 else "MISSES"
        lines.append(
            f"ratio simulate / plain (median s/round): {ratio:.2f}  ({verdict} the target <= 1.0)"
        )
    lines += [
        f"simulate median MLflow round_seconds:    "
        f"{statistics.median(simulation.mlflow_round_seconds):.3f}  "
        "(select start to scoring; excludes MLflow logging)",
        "",
        "simulate, median s/round by stage:",
    ]
    lines += [f"  {name:<22}{s:>8.3f}" for name, s in simulation.stage_seconds.items()]
    if pipeline is not None:
        lines += [
            "",
            f"kfp.local, {pipeline.rounds} rounds, {pipeline.tasks} tasks:",
            f"  kfp.local run_pipeline total s   {pipeline.kfp_seconds:8.2f}",
            f"  simulate (register included) s   {pipeline.simulate_seconds:8.2f}",
            f"  overhead per task s              {pipeline.overhead_per_task:8.2f}",
        ]
    return "\n".join(lines)


def results_json(
    args: argparse.Namespace,
    simulation: SimulationTiming,
    plain: LoopTiming | None,
    pipeline: PipelineTiming | None,
    seconds: float,
    load_at_start: list[float],
    floors: Floor,
) -> dict[str, Any]:
    floor = floors.seconds
    return {
        "setting": {"config": str(CONFIG_PATH.relative_to(REPO)), "training.rounds": args.rounds},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
        },
        "simulate": simulation.to_dict(),
        "plain_keras": plain.to_dict() if plain else None,
        "ratio_simulate_over_plain": simulation.median / plain.median if plain else None,
        "floor_seconds": floor,
        "floor_median_seconds": statistics.median(floor),
        "floor_cpu_seconds": floors.cpu_seconds,
        "floor_setting": floors.setting,
        "floor_by_setting": {
            setting: {"seconds": wall, "cpu_seconds": cpu}
            for setting, (wall, cpu) in floors.by_setting.items()
        },
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "ratio_simulate_over_floor": simulation.median / statistics.median(floor),
        "kfp_local": None if pipeline is None else pipeline.to_dict(),
        "benchmark_seconds": seconds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per loop (default 8)")
    parser.add_argument(
        "--kfp-rounds", type=int, default=2, help="rounds of the kfp.local run (default 2)"
    )
    parser.add_argument("--skip-kfp", action="store_true", help="skip the kfp.local measurement")
    parser.add_argument(
        "--skip-plain", action="store_true", help="skip the plain Keras loop (model.fit per client)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="directory of MNIST IDX files"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON path")
    parser.add_argument("--floor-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor_only:  # the child of time_floor_with_threads
        with tempfile.TemporaryDirectory(prefix="fedpipe-bench-") as tmp:
            print(
                json.dumps(time_floor(reference_config(args.data_dir, Path(tmp), 1), args.rounds))
            )
        return 0
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    if load_at_start[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {load_at_start[0]} at start; timings may be noisy", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedpipe-bench-") as tmp:
        work = Path(tmp)
        config = reference_config(args.data_dir, work, args.rounds)
        datasets.load(config)  # read MNIST once, outside every timed loop
        threads = int(os.environ["TF_NUM_INTRAOP_THREADS"])  # as the trainer set it
        cores = machine.usable_cores()  # TensorFlow's default: one thread per core
        print("compute floor: one epoch over all training examples", flush=True)
        before = time_floor(config, args.rounds)
        print(f"simulate: {args.rounds} rounds of {CONFIG_PATH.name}", flush=True)
        simulation = time_simulation(config, work)
        print("compute floor again, then with one intra-op thread per core", flush=True)
        floors = Floor(
            {
                f"{threads} intra-op thread, before the simulation": before,
                f"{threads} intra-op thread, after the simulation": time_floor(config, args.rounds),
                f"{cores} intra-op threads (child process)": time_floor_with_threads(args, cores),
            }
        )
        plain = None
        if not args.skip_plain:
            print(f"plain Keras FedAvg: {args.rounds} rounds", flush=True)
            plain = time_plain_keras(config)
        pipeline = None
        if not args.skip_kfp:
            print(f"kfp.local: {args.kfp_rounds} rounds", flush=True)
            kfp_work = work / "kfp"
            kfp_config = reference_config(args.data_dir, kfp_work, args.kfp_rounds)
            pipeline = time_pipeline(kfp_config, kfp_work)
    seconds = time.perf_counter() - started
    print("\n" + report(simulation, plain, pipeline, floors))
    print(f"load average at start {load_at_start}, at end {[round(x, 2) for x in os.getloadavg()]}")
    print(f"\nbenchmark ran in {seconds:.1f}s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    results = results_json(args, simulation, plain, pipeline, seconds, load_at_start, floors)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
