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
involved are also summed from /proc: this process (the pipeline), and with agents the
coordinator, the agents and (as the agents' children) their training workers, reported
per process role too. Their ratio is the work agents add, whatever the load.

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


def cpu_by_role(roles: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds of each role's processes (role -> its processes) and,
    as "<role> children", of their descendants that are no role's, from /proc/<pid>/stat
    (Linux)."""
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
    rooted = {pid for roots in roles.values() for pid in roots}
    spent = {}
    for role, roots in roles.items():
        spent[role] = sum(used.get(pid, 0.0) for pid in roots)
        total, todo = 0.0, [c for pid in roots for c in children[pid]]
        while todo:
            pid = todo.pop()
            if pid not in rooted:  # another role's process is counted there
                total += used.get(pid, 0.0)
                todo += children[pid]
        spent[f"{role} children"] = total
    return spent


@contextlib.contextmanager
def round_clock(roles: dict[str, list[int]]) -> Iterator[dict[str, list]]:
    """Wall and CPU seconds (in all, and per role) of each round simulate() runs while
    inside: select's start to evaluate's end (simulate looks the stages up on the module
    at every call)."""
    from fedpipe import stages

    spent: dict[str, list] = {"wall": [], "cpu": [], "cpu_by_role": []}
    started: list[tuple[float, dict[str, float]]] = []
    select, evaluate = stages.select, stages.evaluate

    @functools.wraps(select)
    def timed_select(*args, **kwargs):
        started.append((time.perf_counter(), cpu_by_role(roles)))
        return select(*args, **kwargs)

    @functools.wraps(evaluate)
    def timed_evaluate(*args, **kwargs):
        try:
            return evaluate(*args, **kwargs)
        finally:
            wall, before = started[-1]
            after = cpu_by_role(roles)
            by_role = {role: after[role] - before.get(role, 0.0) for role in after}
            spent["wall"].append(time.perf_counter() - wall)
            spent["cpu"].append(sum(by_role.values()))
            spent["cpu_by_role"].append(by_role)

    stages.select, stages.evaluate = timed_select, timed_evaluate
    try:
        yield spent
    finally:
        stages.select, stages.evaluate = select, evaluate


def timed_run(config, workdir: Path, roles: dict[str, list[int]]) -> dict:
    from fedpipe.simulation.runner import simulate

    with round_clock(roles) as spent:
        result = simulate(config, workdir, run_name="agents-round", register=False)
    wall, cpu, by_role = spent["wall"], spent["cpu"], spent["cpu_by_role"]
    later = by_role[1:] or by_role
    return {
        "round_seconds": wall,
        "round_cpu_seconds": cpu,
        "first_round_seconds": wall[0],
        "median_round_seconds": statistics.median(wall[1:] or wall),
        "median_round_cpu_seconds": statistics.median(cpu[1:] or cpu),
        "median_round_cpu_seconds_by_role": {
            role: statistics.median(r[role] for r in later) for role in later[0]
        },
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
                "simulated": timed_run(config, work / f"sim-{mode}", {"pipeline": [os.getpid()]})
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
                roles = {
                    "pipeline": [os.getpid()],
                    "coordinator": [fed.coordinator.pid],
                    "agents": [p.pid for p in fed.agents.values()],  # children: their workers
                }
                figures["modes"][mode]["agents"] = timed_run(remote, work / f"agents-{mode}", roles)
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
    print("median CPU s/round by process, agents runs (rounds 2-):")
    for mode, runs in figures["modes"].items():
        by_role = runs["agents"]["median_round_cpu_seconds_by_role"]
        print(f"  {mode:<9}" + "  ".join(f"{role} {s:.2f}" for role, s in by_role.items() if s))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=1))
    print(f"written to {args.output}")
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
