"""Injected infrastructure faults: task crashes, hangs, corrupted artifacts, client outages,
aggregate crashes and whole-run crashes, so that self-healing can be exercised and timed.

These are faults of the *tasks* that run a round (distinct from fedpipe.client_systems,
which simulates the behaviour of clients inside a task). Every fault is decided from the
run seed, the round and the task (rates) or named in `fault_schedule`, and fires inside a
stage function, so the pipeline and the simulation both exercise it.

A fault a retry must recover from fires on a task's first attempt only. Attempts are
counted in marker files under `fault_state_dir` (shared by the attempts of a task, and by
a re-run of the same config in the same pipeline root), so a retry knows it is a retry.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.config.fault_schedule import (
    AGGREGATE_CRASH,
    CORRUPT,
    CRASH,
    HANG,
    OUTAGE,
    PIPELINE_CRASH,
    TASK_KINDS,
    ScheduledFault,
)

if TYPE_CHECKING:
    from fedpipe.config import RunConfig

# The fault kinds and the schedule grammar are part of this module's interface.
_TASK_FAULT_TAG = 0xFA17  # separates the fault stream from every other seeded stream


class TaskCrashed(SystemExit):
    """An injected crash: uncaught, it ends the task's process with a non-zero exit code,
    as a killed pod would; the in-process simulation catches it and retries."""

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(f"{site}: {reason}")


def schedule(config: RunConfig) -> list[ScheduledFault]:
    return [ScheduledFault.parse(e) for e in config.simulation.faults.schedule]


def enabled(config: RunConfig) -> bool:
    """Some fault may be injected in this run."""
    rates = (
        config.simulation.faults.task_crash_rate
        + config.simulation.faults.task_hang_rate
        + config.simulation.faults.artifact_corruption_rate
    )
    return rates > 0 or bool(config.simulation.faults.schedule)


def task_fault(config: RunConfig, round_number: int, shard: int) -> str | None:
    """The fault of this local-train task (one of TASK_KINDS, or None): scheduled, or
    drawn from the rates with a generator keyed on seed, round and shard."""
    for fault in schedule(config):
        if fault.kind in TASK_KINDS and fault.hits(fault.kind, round_number, shard):
            return fault.kind
    u = np.random.default_rng([config.seed, round_number, shard, _TASK_FAULT_TAG]).random()
    for kind, rate in (
        (CRASH, config.simulation.faults.task_crash_rate),
        (HANG, config.simulation.faults.task_hang_rate),
        (CORRUPT, config.simulation.faults.artifact_corruption_rate),
    ):
        if u < rate:
            return kind
        u -= rate
    return None


def client_out(config: RunConfig, round_number: int, client_id: int) -> bool:
    """The client has disappeared this round (a scheduled outage)."""
    return any(f.hits(OUTAGE, round_number, client_id) for f in schedule(config))


def with_state_dir(config: RunConfig, root: str | Path) -> RunConfig:
    """The config with its attempt markers under root/faults when faults are injected and
    no fault_state_dir is set (without one, a retry could not tell it is a retry)."""
    if not enabled(config) or config.simulation.faults.state_dir is not None:
        return config
    return config.replace({"simulation.faults.state_dir": str(Path(root).resolve() / "faults")})


def retrying(config: RunConfig, stage: Callable[..., Any], *args: Any) -> None:
    """Run a stage in-process as KFP runs a task: again after an injected crash, up to
    task_retries times (without the backoff sleep)."""
    for attempt in range(config.pipeline.task_retries + 1):
        try:
            stage(*args)
            return
        except TaskCrashed:
            if attempt == config.pipeline.task_retries:
                raise


def _state_dir(config: RunConfig) -> Path:
    return Path(config.simulation.faults.state_dir)


def start_attempt(config: RunConfig, round_number: int, site: str) -> int:
    """Record that a task starts and return its attempt number (1 = first). Without a
    fault_state_dir every attempt is a first attempt."""
    if config.simulation.faults.state_dir is None:
        return 1
    path = _state_dir(config) / "attempts" / f"round_{round_number:03d}_{site}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    attempt = (len(path.read_text().splitlines()) if path.exists() else 0) + 1
    with path.open("a") as f:
        f.write(json.dumps({"attempt": attempt, "started": time.time()}) + "\n")
    return attempt


def attempts(config: RunConfig, round_number: int) -> dict[str, list[float]]:
    """Start times of every attempt of every task of the round, by task site."""
    if config.simulation.faults.state_dir is None:
        return {}
    found = {}
    for path in sorted((_state_dir(config) / "attempts").glob(f"round_{round_number:03d}_*")):
        site = path.stem.removeprefix(f"round_{round_number:03d}_")
        found[site] = [json.loads(line)["started"] for line in path.read_text().splitlines()]
    return found


def record(
    config: RunConfig, round_number: int, site: str, kind: str, attempt: int, outcome: str
) -> None:
    """Log an injected fault (the downtime measurement starts from its time)."""
    print(
        f"round {round_number} {site}: injected {kind} (attempt {attempt}): {outcome}", flush=True
    )
    if config.simulation.faults.state_dir is None:
        return
    path = _state_dir(config) / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    event = {
        "round": round_number,
        "site": site,
        "kind": kind,
        "attempt": attempt,
        "outcome": outcome,
        "time": time.time(),
    }
    with path.open("a") as f:
        f.write(json.dumps(event) + "\n")


def events(config: RunConfig) -> list[dict]:
    if config.simulation.faults.state_dir is None:
        return []
    path = _state_dir(config) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def final_attempt(config: RunConfig, attempt: int) -> bool:
    return attempt >= config.pipeline.task_retries + 1


def fail_task(config: RunConfig, round_number: int, site: str, kind: str, attempt: int) -> None:
    """Crash the task (a hang first holds it until its deadline kills it)."""
    if kind == HANG:
        record(
            config,
            round_number,
            site,
            kind,
            attempt,
            f"killed after {config.simulation.faults.task_hang_s}s",
        )
        time.sleep(config.simulation.faults.task_hang_s)
    else:
        record(config, round_number, site, kind, attempt, "process exit")
    raise TaskCrashed(site, f"injected {kind} on attempt {attempt}")


def corrupt(update: ClientUpdate) -> ClientUpdate:
    """The update with flipped bytes in its vector but its original checksum, as a bad disk
    or a torn upload would leave it: aggregate must reject it by checksum."""
    raw = bytearray(update.vector.tobytes())
    for i in range(min(16, len(raw))):
        raw[i] ^= 0xFF
    vector = np.frombuffer(bytes(raw), dtype=update.vector.dtype).reshape(update.vector.shape)
    return dataclasses.replace(update, vector=vector)


def aggregate_fault(config: RunConfig, round_number: int, attempt: int) -> str | None:
    """aggregate_crash fires on the first attempt (a retry recovers); pipeline_crash on
    every attempt of the first run (the run fails; a re-run resumes past it)."""
    for fault in schedule(config):
        if fault.hits(AGGREGATE_CRASH, round_number) and attempt == 1:
            return AGGREGATE_CRASH
        if fault.hits(PIPELINE_CRASH, round_number) and attempt <= config.pipeline.task_retries + 1:
            return PIPELINE_CRASH
    return None
