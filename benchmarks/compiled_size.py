"""Compiled pipeline size against the training's rounds: 10, 100 and 1000 rounds, plain
and SecAgg+. A training runs as chained segment pipelines of rounds_per_segment rounds, so
the largest compiled file must not grow with the rounds (target: at most 300 KB for any
count), and the Argo workflow each becomes must fit a default KFP backend.

    python benchmarks/compiled_size.py [--rounds-per-segment N] [--out runs/bench]

Prints a table and writes compiled_size.md to --out.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fedpipe import config
from fedpipe.ops import compilation

LIMIT_BYTES = 300_000


def measure(rounds: int, secure: str, per_segment: int | None) -> tuple[int, int, str]:
    """(largest compiled file, its estimated Argo workflow, verdict) of a training."""
    overrides = {"training.rounds": rounds, "aggregation.secure.mode": secure}
    if per_segment:
        overrides["pipeline.rounds_per_segment"] = per_segment
    cfg = config.load(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        paths = compilation.compile_training(cfg, Path(tmp))
        estimates = [compilation.estimate_workflow(p, cfg.shard_count) for p in paths]
    worst = max(estimates, key=lambda e: e.workflow_bytes)
    largest = max(e.compiled_bytes for e in estimates)
    return largest, worst.workflow_bytes, worst.verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds-per-segment", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    lines = [
        "| aggregation | rounds | largest compiled pipeline | est. Argo workflow | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    over = []
    for secure in ("off", "secagg+"):
        for rounds in (10, 100, 1000):
            compiled, workflow, verdict = measure(rounds, secure, args.rounds_per_segment)
            name = "plain" if secure == "off" else secure
            lines.append(
                f"| {name} | {rounds} | {compiled / 1000:.0f} KB | {workflow / 1024:.0f} KiB "
                f"| {verdict} |"
            )
            print(lines[-1], flush=True)
            if compiled > LIMIT_BYTES or verdict != "ok":
                over.append((name, rounds))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compiled_size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(
        f"target: at most {LIMIT_BYTES // 1000} KB at any round count: "
        + ("met" if not over else f"MISSED for {over}")
    )


if __name__ == "__main__":
    main()
