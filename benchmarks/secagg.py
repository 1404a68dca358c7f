"""Secure aggregation cost: client and server seconds, bytes per client, and the server's
time relative to a plain float32 sum of the same updates, for cohorts of 10, 100 and 500
clients, models of 100k and 1M parameters and 0, 10 and 30% dropout after key sharing.
Also the PRG (ChaCha20) throughput: the floor for mask expansion.

    python benchmarks/secagg.py [--quick] [--out runs/bench]

Writes secagg.csv and secagg.md to --out and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

from fedpipe.secagg import FixedPoint, Session, ThresholdNotMet, graph, primitives
from fedpipe.secagg.in_process import run_round

TARGET = {"clients": 100, "params": 1_000_000, "dropout": 0.1, "mode": "secagg+"}


def prg_throughput(size: int = 8_000_000, repeats: int = 10) -> float:
    """Bytes per second of ChaCha20 mask expansion."""
    started = time.perf_counter()
    for i in range(repeats):
        primitives.expand_mask(bytes([i]) * 32, size // 4, np.dtype(np.uint32))
    return size * repeats / (time.perf_counter() - started)


def plain_sum_seconds(updates: list[np.ndarray], repeats: int = 3) -> float:
    """Seconds to sum the float32 updates one by one, as a server without masking would
    (the best of a few repeats: the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = np.zeros_like(updates[0])
        for u in updates:
            total += u
        best = min(best, time.perf_counter() - started)
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
    session = Session(1, neighbours, threshold, encoding, params + 1)
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
    plain = plain_sum_seconds([update + np.float32(c) for c in ids[: len(run.survivors)]])
    server = sum(run.server_seconds.values())
    return {
        **row,
        "outcome": "exact",
        "client_s": round(sum(run.client_seconds.values()), 4),
        "client_masking_s": round(run.client_seconds["masked_input"], 4),
        "server_s": round(server, 4),
        "plain_sum_s": round(plain, 4),
        "server_vs_plain": round(server / plain, 1),
        "kib_per_client": round(run.bytes_per_client / 1024, 1),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small settings only")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    throughput = prg_throughput()
    print(f"ChaCha20 mask expansion: {throughput / 1e9:.2f} GB/s", flush=True)
    rows = []
    for setting in grid(args.quick):
        rows.append(one_setting(*setting))
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "secagg.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(max(rows, key=len)))
        writer.writeheader()
        writer.writerows(rows)
    table = f"PRG (ChaCha20) throughput: {throughput / 1e9:.2f} GB/s\n\n" + to_markdown(rows)
    (args.out / "secagg.md").write_text(table)
    print(table)
    for r in rows:
        if all(r[k] == v for k, v in TARGET.items()) and r["outcome"] == "exact":
            verdict = r["server_vs_plain"] <= 10 and r["client_masking_s"] <= 0.5
            print(
                f"target (n=100, 1M, 10% dropout, SecAgg+: server <= 10x plain sum, client "
                f"masking <= 0.5 s): server {r['server_vs_plain']}x, client masking "
                f"{r['client_masking_s']} s -> {'met' if verdict else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
