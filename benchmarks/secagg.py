"""Secure aggregation cost: the server's time against a plain float32 sum of the same
updates, and its peak memory, at the target setting (SecAgg+, 1M parameters, 10% dropout
after key sharing) for cohorts of 100, 500 and 1,000 clients, each case in its own process
so that its peak resident memory is its own. Also the PRG throughput (AES-128-CTR, the
mask PRG, and ChaCha20 for comparison), and from it each case's floor: its masks' bytes
at that rate on every core, against the plain sum and the server.

    python benchmarks/secagg.py            # the target cases (what `make bench` runs)
    python benchmarks/secagg.py --grid     # cohorts 10-500, 100k/1M, 0-30% dropout
    python benchmarks/secagg.py --quick    # two small settings

Writes secagg.csv and secagg.md to --out and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fedpipe.ops import machine
from fedpipe.secagg import FixedPoint, Session, ThresholdNotMet, graph, primitives
from fedpipe.secagg.in_process import run_round
from fedpipe.secagg.quantization import TRAILING_WORDS

TARGET = {"clients": 100, "params": 1_000_000, "dropout": 0.1, "mode": "secagg+"}
TARGET_RATIO = 5.0  # server seconds / plain-sum seconds at TARGET
SCALING_COHORTS = (100, 500, 1000)


def prg_throughput(params: int = 1_000_000, masks: int = 32) -> dict[str, float]:
    """Bytes of mask per second that one core removes, streamed as the server streams them
    (`primitives.add_masks` of many masks over one vector: AES-128-CTR keystream into a
    cache-sized chunk, then added), and a ChaCha20 keystream from `cryptography` (the PRG
    before) for comparison; per wall second and per second of this thread's CPU time
    (what the core delivers when it is not shared)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    words = np.zeros(params, np.uint32)
    seeds = [(bytes([i]) * 32, 1) for i in range(masks)]
    size = words.nbytes * masks
    zeros, out = bytes(words.nbytes), bytearray(words.nbytes)
    chacha = Cipher(algorithms.ChaCha20(bytes(32), bytes(16)), mode=None).encryptor()
    results = {}
    for name, expand in (
        ("aes128_ctr", lambda: primitives.add_masks(words, seeds, workers=1)),
        ("chacha20", lambda: [chacha.update_into(zeros, out) for _ in range(masks)]),
    ):
        expand()  # warm: pages and caches
        started, cpu = time.perf_counter(), time.thread_time()
        expand()
        results[name] = size / (time.perf_counter() - started)
        results[f"{name}_cpu"] = size / (time.thread_time() - cpu)
    return results


def mask_floor_seconds(row: dict, bytes_per_cpu_second: float) -> float:
    """What removing the row's masks costs at least: its mask bytes at the measured
    per-core rate, spread over the cores add_masks uses."""
    mask_bytes = row["masks"] * 4 * (row["params"] + TRAILING_WORDS)
    return mask_bytes / (bytes_per_cpu_second * machine.usable_cores())


def plain_sum_seconds(update: np.ndarray, clients: list[int], repeats: int = 3) -> float:
    """Seconds to add the float32 updates one by one into a running sum, as a server
    without masking would (each update made just before its add, untimed; the best of a
    few passes: the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        total, seconds = np.zeros_like(update), 0.0
        for c in clients:
            u = update + np.float32(c)
            started = time.perf_counter()
            total += u
            seconds += time.perf_counter() - started
        best = min(best, seconds)
    return best


def one_setting(
    mode: str,
    clients: int,
    params: int,
    dropout: float,
    k: int | None = None,
    threshold: float = 0.6,
    seed: int = 0,
) -> dict:
    ids = list(range(clients))
    if mode == "secagg":
        neighbours = graph.complete(ids)
    else:
        k = k or graph.default_neighbours(clients)
        neighbours = graph.random_regular(ids, k, seed, 1)
    encoding = FixedPoint(1.0, 20, 4096, clients)
    session = Session(1, neighbours, threshold, encoding, params + TRAILING_WORDS)
    rng = np.random.default_rng([seed, clients, params])
    update = rng.normal(0, 0.1, params).astype(np.float32)  # one update, shifted per client
    encoded_one = encoding.encode(update, 100)
    dropped = frozenset(int(c) for c in rng.choice(ids, round(dropout * clients), replace=False))
    row = {
        "mode": mode,
        "clients": clients,
        "params": params,
        "dropout": dropout,
        "neighbours": len(neighbours[0]),
        "threshold": threshold,
        "bits": encoding.bits,
    }
    try:
        run = run_round(
            session,
            lambda c: encoded_one + np.uint32(c),
            lambda c: primitives.derive(b"bench", f"{seed}/{c}".encode()),
            dropped,
        )
    except ThresholdNotMet:
        return {**row, "outcome": "aborted: a secret lost its threshold"}
    expected = len(run.survivors) * encoded_one.astype(np.uint64) + sum(run.survivors)
    assert np.array_equal(run.summed, expected.astype(encoding.word)), "unmasked sum is wrong"
    survivors = set(run.survivors)
    # The server expands one self mask per survivor and, per dropped client, the pairwise
    # mask it shared with each surviving neighbour.
    masks = len(survivors) + sum(len(set(neighbours[d]) & survivors) for d in run.dropped)
    plain = plain_sum_seconds(update, list(run.survivors))
    server = sum(run.server_seconds.values())
    return {
        **row,
        "outcome": "exact",
        "client_s": round(sum(run.client_seconds.values()), 4),
        "client_masking_s": round(run.client_seconds["masked_input"], 4),
        "server_s": round(server, 4),
        "plain_sum_s": round(plain, 4),
        "server_vs_plain": round(server / plain, 1),
        "masks": masks,
        "kib_per_client": round(run.bytes_per_client / 1024, 1),
        "model_mib": round(4 * (params + 1) / 2**20, 1),
    }


def grid(quick: bool) -> list[tuple]:
    if quick:
        return [("secagg+", 10, 100_000, 0.1), ("secagg+", 100, 100_000, 0.1)]
    settings = [
        ("secagg+", n, p, d)
        for n in (10, 100, 500)
        for p in (100_000, 1_000_000)
        for d in (0.0, 0.1, 0.3)
    ]
    # At 30% dropout some neighbourhood of 2 log2 n loses its threshold: retry with twice
    # the neighbours and the lowest threshold allowed.
    settings += [
        ("secagg+", n, p, 0.3, 4 * math.ceil(math.log2(n)), 0.51)
        for n in (100, 500)
        for p in (100_000, 1_000_000)
    ]
    # Full SecAgg (everyone is everyone's neighbour) costs O(n) masks per client.
    settings += [("secagg", n, 100_000, d) for n in (10, 100) for d in (0.0, 0.1, 0.3)]
    settings += [("secagg", 100, 1_000_000, 0.1)]
    return settings


def to_markdown(rows: list[dict]) -> str:
    keys = list(max(rows, key=len))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def isolated(setting: tuple) -> dict:
    """One setting in a fresh interpreter, so the peak memory is that case's alone."""
    out = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(setting)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def rss_mib() -> float:
    """This process's resident memory now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def run_case(setting: list) -> None:
    baseline = rss_mib()  # interpreter, numpy, cryptography
    row = one_setting(*setting)
    row["rss_before_mib"] = round(baseline, 1)
    row["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small settings only")
    parser.add_argument("--grid", action="store_true", help="the full grid of settings")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one setting, JSON, in a subprocess
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    if args.case:
        run_case(json.loads(args.case))
        return
    throughput = prg_throughput()
    prg_line = "PRG throughput, one core (expansion + add), per wall / CPU second: " + ", ".join(
        f"{name} {throughput[name] / 1e9:.2f} / {throughput[name + '_cpu'] / 1e9:.2f} GB/s"
        for name in ("aes128_ctr", "chacha20")
    )
    print(prg_line, flush=True)
    if args.quick or args.grid:
        settings = grid(args.quick)
    else:
        settings = [("secagg+", n, TARGET["params"], TARGET["dropout"]) for n in SCALING_COHORTS]
    rows = []
    for setting in settings:
        row = isolated(setting)
        if row["outcome"] == "exact":
            floor = mask_floor_seconds(row, throughput["aes128_ctr_cpu"])
            row["mask_floor_s"] = round(floor, 4)
            row["floor_vs_plain"] = round(floor / row["plain_sum_s"], 1)
            row["server_vs_floor"] = round(row["server_s"] / floor, 2)
        rows.append(row)
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "secagg.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(max(rows, key=len)))
        writer.writeheader()
        writer.writerows(rows)
    table = prg_line + "\n\n" + to_markdown(rows)
    (args.out / "secagg.md").write_text(table)
    print(table)
    for r in rows:
        if all(r[k] == v for k, v in TARGET.items()) and r["outcome"] == "exact":
            verdict = r["server_vs_plain"] <= TARGET_RATIO
            print(
                f"target (n=100, 1M, 10% dropout, SecAgg+: server <= {TARGET_RATIO:g}x plain "
                f"sum): server {r['server_vs_plain']}x -> {'met' if verdict else 'NOT met'}; "
                f"removing its {r['masks']} masks alone takes {r['floor_vs_plain']}x the plain "
                f"sum on {machine.usable_cores()} cores at the measured rate "
                f"(server {r['server_vs_floor']}x that)"
            )
    for r in rows:
        if r["outcome"] == "exact" and r["dropout"] == TARGET["dropout"]:
            growth = (r["peak_rss_mib"] - r["rss_before_mib"]) / r["model_mib"]
            print(
                f"n={r['clients']}: peak memory {r['peak_rss_mib']} MiB, "
                f"{growth:.1f}x the {r['model_mib']} MiB vector above the "
                f"{r['rss_before_mib']} MiB the process held before the round"
            )


if __name__ == "__main__":
    main()
