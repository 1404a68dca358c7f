"""Seconds per round with the clients as agent processes against in-process clients.

The same config (configs/mnist.yaml, the MNIST reference setting, shortened to --rounds
rounds) is run by simulate() twice per secure-aggregation mode (off, secagg+): once with
`clients.runtime: simulated` (every client trained in this process) and once with
`clients.runtime: agents` (a coordinator and one `fedpipe agent` process per client on
127.0.0.1, mutual TLS, each agent with its own data folder). A round is timed from the
start of its select stage to the end of its evaluate stage, so it includes the SecAgg
steps and, with agents, every task's dispatch, transfer and answer. The first round
(agent workers starting, TensorFlow import, tracing) is reported apart; the figure is the
median of the others. Issue 12's target: agents add at most 20% (ratio <= 1.2).

On a shared, busy machine wall time favours the agents: ten processes get a larger share
of the CPUs than one. So each round's CPU seconds (user + system) of every process
involved are also summed from /proc: this process, and with agents the coordinator, the
agents and their workers. Their ratio is the work agents add, whatever the load.

    .venv/bin/python benchmarks/agents_round.py [--rounds 5] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CONFIG_PATH = REPO / "configs" / "mnist.yaml"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "agents_round.json"
TARGET = 1.2
MODES = ("off", "secagg+")


def cpu_seconds(roots: list[int]) -> float:
    """User + system CPU seconds of the processes `roots` and all their descendants, from
    /proc/<pid>/stat (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # fields 3.. of proc(5)
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    children = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    total, todo = 0.0, list(roots)
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0.0)
        todo += children[pid]
    return total


@contextlib.contextmanager
def round_clock(roots: list[int]) -> Iterator[dict[str, list[float]]]:
    """Wall and CPU seconds of each round simulate() runs while inside: select's start to
    evaluate's end (simulate looks the stages up on the module at every call)."""
    from fedpipe import stages

    spent: dict[str, list[float]] = {"wall": [], "cpu": []}
    started: list[tuple[float, float]] = []
    select, evaluate = stages.select, stages.evaluate

    @functools.wraps(select)
    def timed_select(*args, **kwargs):
        started.append((time.perf_counter(), cpu_seconds(roots)))
        return select(*args, **kwargs)

    @functools.wraps(evaluate)
    def timed_evaluate(*args, **kwargs):
        try:
            return evaluate(*args, **kwargs)
        finally:
            spent["wall"].append(time.perf_counter() - started[-1][0])
            spent["cpu"].append(cpu_seconds(roots) - started[-1][1])

    stages.select, stages.evaluate = timed_select, timed_evaluate
    try:
        yield spent
    finally:
        stages.select, stages.evaluate = select, evaluate


def timed_run(config, workdir: Path, roots: list[int]) -> dict:
    from fedpipe.simulation.runner import simulate

    with round_clock(roots) as spent:
        result = simulate(config, workdir, run_name="agents-round", register=False)
    wall, cpu = spent["wall"], spent["cpu"]
    return {
        "round_seconds": wall,
        "round_cpu_seconds": cpu,
        "first_round_seconds": wall[0],
        "median_round_seconds": statistics.median(wall[1:] or wall),
        "median_round_cpu_seconds": statistics.median(cpu[1:] or cpu),
        "accuracy": result.accuracy,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    from fedpipe import config as run_config
    from fedpipe.agents import data_folder
    from fedpipe.agents.local import LocalFederation

    figures: dict = {"rounds": args.rounds, "load_average": os.getloadavg(), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="fedpipe-agents-bench-") as tmp:
        work = Path(tmp)
        base = run_config.load(CONFIG_PATH).replace(
            {
                "data.data_dir": str(args.data_dir.resolve()),
                "training.rounds": args.rounds,
                "tracking.uri": f"sqlite:///{work / 'mlflow.db'}",
            }
        )
        configs = {m: base.replace({"aggregation.secure.mode": m}) for m in MODES}
        for mode, config in configs.items():
            print(f"simulated clients, secure mode {mode} ...", flush=True)
            figures["modes"][mode] = {
                "simulated": timed_run(config, work / f"sim-{mode}", [os.getpid()])
            }
        owners = data_folder.prepare(base, work / "owners")
        clients = base.data.num_clients
        with LocalFederation(work / "federation", clients) as fed:
            started = time.perf_counter()
            fed.start_coordinator()
            for c, folder in enumerate(owners):
                fed.start_agent(c, folder)
            fed.wait_online(range(clients), timeout_s=600)
            figures["agents_online_seconds"] = time.perf_counter() - started
            for mode, config in configs.items():
                print(f"{clients} agents, secure mode {mode} ...", flush=True)
                remote = config.replace(
                    {
                        "clients.runtime": "agents",
                        "clients.coordinator": fed.address,
                        "clients.tls_dir": str(fed.tls.root),
                        "clients.task_timeout_s": 600.0,
                    }
                )
                roots = [os.getpid(), fed.coordinator.pid, *(p.pid for p in fed.agents.values())]
                figures["modes"][mode]["agents"] = timed_run(remote, work / f"agents-{mode}", roots)
    print(f"\nMNIST reference setting, {args.rounds} rounds, load average {os.getloadavg()}")
    print(f"agents online {figures['agents_online_seconds']:.1f}s after their start")
    print(
        f"{'secure':<9}{'wall s/round sim':>17}{'agents':>8}{'ratio':>7}"
        f"{'CPU s/round sim':>17}{'agents':>8}{'ratio':>7}  first round sim / agents"
    )
    for mode, runs in figures["modes"].items():
        sim, agents = runs["simulated"], runs["agents"]
        runs["ratio"] = agents["median_round_seconds"] / sim["median_round_seconds"]
        runs["cpu_ratio"] = agents["median_round_cpu_seconds"] / sim["median_round_cpu_seconds"]
        print(
            f"{mode:<9}{sim['median_round_seconds']:>17.2f}{agents['median_round_seconds']:>8.2f}"
            f"{runs['ratio']:>7.2f}{sim['median_round_cpu_seconds']:>17.2f}"
            f"{agents['median_round_cpu_seconds']:>8.2f}{runs['cpu_ratio']:>7.2f}  "
            f"{sim['first_round_seconds']:.1f}s / {agents['first_round_seconds']:.1f}s"
            f"{'' if runs['ratio'] <= TARGET else f'  (wall target <= {TARGET})'}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=1))
    print(f"written to {args.output}")
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
