"""Wall time per task kind in a kfp.local run of the pipeline, and the run's total.

Runs the pipeline on the demo's config (the embedded default, as `make demo` does, unless
--rounds or --set change it) in a child process, reads the "Executing task" and "Task ...
finished" lines kfp.local logs (millisecond timestamps) and prints, per task kind
(initialize, select, broadcast, local-train, aggregate, evaluate, register), the median
and the maximum seconds from start to finish of a task: the process start, the imports,
the stage's work and the artifact writes. Tasks that do not train should be near the
cost of starting a Python process that imports kfp.

It runs the config twice: with tasks forked from a warm interpreter (what `fedpipe run`
does) and started cold (`fedpipe run --cold-tasks`: every task imports TensorFlow and
MLflow itself, as a cluster pod does), and prints the ratio of the two runs' wall times.

    .venv/bin/python benchmarks/task_overhead.py [--rounds N] [--set FIELD=VALUE ...]
        [--starts warm,cold]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINE = re.compile(
    r"^(?P<time>\d{2}:\d{2}:\d{2}\.\d{3}) - INFO - "
    r"(?:Executing task '(?P<start>[^']+)'|Task '(?P<end>[^']+)' finished with status)"
)
KIND = re.compile(r"-\d+$")  # "evaluate-3" is an evaluate task

CHILD = """
import json, sys
from pathlib import Path
from fedpipe import config
from fedpipe.ops import local_run

overrides = json.loads(sys.argv[2])
cfg = config.resolve_local_paths(config.load(None, overrides), Path.cwd())
local_run.run_pipeline(cfg, Path(sys.argv[1]) / "pipeline_root", cold_tasks=sys.argv[3] == "cold")
"""


def task_durations(log: str) -> dict[str, list[float]]:
    """Seconds per task, grouped by kind, from kfp.local's log lines."""
    started: dict[str, datetime.datetime] = {}
    by_kind: dict[str, list[float]] = defaultdict(list)
    for raw in log.splitlines():
        match = LINE.match(ANSI.sub("", raw).strip())
        if not match:
            continue
        at = datetime.datetime.strptime(match["time"], "%H:%M:%S.%f")
        if match["start"]:
            started[match["start"]] = at
        elif match["end"] in started:
            seconds = (at - started.pop(match["end"])).total_seconds() % 86_400
            by_kind[KIND.sub("", match["end"])].append(seconds)
    return dict(by_kind)


def run(overrides: dict, start: str, keep: Path | None) -> tuple[float, dict[str, list[float]]]:
    """One kfp.local run in a child process: its wall seconds and task seconds by kind."""
    with tempfile.TemporaryDirectory(prefix="fedpipe-bench-") as tmp:
        root = ((keep / start) if keep else Path(tmp)).resolve()  # holds the MLflow store
        root.mkdir(parents=True, exist_ok=True)
        log_path = root / "kfp_local.log"  # streamed, so a slow run can be watched
        started = time.perf_counter()
        with log_path.open("w") as out:
            child = subprocess.run(
                [sys.executable, "-c", CHILD, str(root), json.dumps(overrides), start],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        wall = time.perf_counter() - started
        log = log_path.read_text()
        # kfp.local's own log lines go to each training's kfp-local.log, not the terminal.
        runner_log = "\n".join(p.read_text() for p in sorted(root.rglob("kfp-local.log")))
    if child.returncode != 0:
        sys.exit(f"pipeline failed (exit {child.returncode}):\n{log[-3000:]}")
    return wall, task_durations(runner_log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="Default: the demo's.")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="F=V")
    parser.add_argument("--starts", default="warm,cold", help="warm, cold or both (default).")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the runs' files here.")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (pair.split("=", 1) for pair in args.sets)}
    if args.rounds is not None:
        overrides["training.rounds"] = args.rounds
    described = json.dumps(overrides) if overrides else "the demo's config"
    walls = {}
    for start in args.starts.split(","):
        wall, durations = run(overrides, start, args.keep)
        walls[start] = wall
        print(f"kfp.local pipeline run ({described}), tasks started {start}: {wall:.1f}s wall")
        print(f"{'task kind':<22}{'tasks':>6}{'median s':>10}{'max s':>8}")
        by_median = sorted(durations.items(), key=lambda kv: -statistics.median(kv[1]))
        for kind, seconds in by_median:
            if kind.startswith(("for-loop", "condition", "exit-handler")):
                continue  # DAG groups, not tasks: their time is their tasks'
            median, longest = statistics.median(seconds), max(seconds)
            print(f"{kind:<22}{len(seconds):>6}{median:>10.2f}{longest:>8.2f}")
    if len(walls) == 2:
        print(f"warm / cold wall time: {walls['warm'] / walls['cold']:.2f}")


if __name__ == "__main__":
    main()
