"""Coordinator throughput: 100 agents on 127.0.0.1 (real mutual-TLS gRPC connections, one
channel and certificate each; the agents run as threads of one helper process so 100 of
them fit the machine), and rounds of model-sized tasks through the coordinator process.

    python benchmarks/coordinator.py [--agents 100] [--rounds 3] [--params 199210]

Reports: seconds until all agents are online, per round the seconds to dispatch a task
with a model-sized payload to every agent and collect a model-sized answer, tasks per
second, payload megabytes per second through the coordinator, and bytes per client per
round. Bounded: every wait has a timeout, and every process is killed at the end.
Writes benchmarks/results/coordinator.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fedpipe.agents import agent as agent_module
from fedpipe.agents import data_folder, provisioning
from fedpipe.agents.local import LocalFederation, wait_until

MNIST_2NN_PARAMS = 199_210  # 784-200-200-10, the MNIST reference setting's model


def host_agents(root: Path, address: str, count: int) -> None:
    """The helper process: `count` agents as threads until stdin closes (no training
    worker: the benchmark's tasks are answered by the transport alone)."""
    tls = provisioning.Layout(root / "tls")
    folder = data_folder.write(root / "data", np.zeros((4, 4), np.float32), np.zeros(4))
    agents = []
    for c in range(count):
        name = provisioning.client_cn(c)
        a = agent_module.Agent(
            str(folder),
            address,
            tls.cert(name),
            tls.key(name),
            tls.ca_cert,
            root / f"s{c}",
            warm_up=False,
        )
        threading.Thread(target=a.serve_forever, daemon=True).start()
        agents.append(a)
    sys.stdin.read()
    for a in agents:
        a.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", type=int, default=MNIST_2NN_PARAMS)
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on every wait")
    parser.add_argument("--host-agents", nargs=2, metavar=("ROOT", "ADDRESS"), help="internal")
    parser.add_argument("--output", default="benchmarks/results/coordinator.json")
    args = parser.parse_args()
    if args.host_agents:
        host_agents(Path(args.host_agents[0]), args.host_agents[1], args.agents)
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalFederation(
            tmp, args.agents, heartbeat_interval_s=2.0, heartbeat_timeout_s=10.0
        ) as fed,
    ):
        fed.start_coordinator()
        started = time.perf_counter()
        helper = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--agents",
                str(args.agents),
                "--host-agents",
                tmp,
                fed.address,
            ],
            stdin=subprocess.PIPE,
        )
        try:
            fed.wait_online(range(args.agents), timeout_s=args.timeout)
            online_s = time.perf_counter() - started
            payload = np.random.default_rng(0).bytes(args.params * 4)
            rounds = []
            with fed.remote(task_timeout_s=args.timeout) as remote:
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    replies = remote.dispatch_all(range(args.agents), "ping", {}, {"echo": payload})
                    seconds = time.perf_counter() - t
                    failed = [r.client_id for r in replies if not r.ok]
                    moved = sum(r.bytes_sent + r.bytes_received for r in replies)
                    rounds.append(
                        {
                            "seconds": seconds,
                            "tasks_per_s": args.agents / seconds,
                            "payload_mb_per_s": moved / seconds / 1e6,
                            "bytes_per_client": moved / args.agents,
                            "failed": failed,
                        }
                    )
        finally:
            helper.stdin.close()
            try:
                helper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        wait_until(lambda: helper.poll() is not None, 30, "the agents' process")
    result = {
        "agents": args.agents,
        "params": args.params,
        "seconds_until_all_online": online_s,
        "rounds": rounds,
        "median_round_seconds": float(np.median([r["seconds"] for r in rounds])),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))
    print(f"{args.agents} agents online after {online_s:.1f}s")
    print("| round | seconds | tasks/s | payload MB/s | bytes per client | failed |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(rounds, 1):
        print(
            f"| {i} | {r['seconds']:.2f} | {r['tasks_per_s']:.1f} | "
            f"{r['payload_mb_per_s']:.1f} | {r['bytes_per_client']:,.0f} | {len(r['failed'])} |"
        )


if __name__ == "__main__":
    main()
