"""Local train: the clients of one shard train from the global model on their own data.

The stage asks the client runtime (fedpipe.clients.runtime) for the shard's updates and
writes them as one artifact; injected task faults (a crashed, hung or corrupting task)
are the task's own, so they stay here."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import save_shard
from fedpipe.clients import runtime
from fedpipe.config import RunConfig, fault_schedule
from fedpipe.simulation import faults


def local_train(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    updates_path: str | Path,
    secagg_messages: Sequence[str | Path] = (),
) -> None:
    """Write one artifact with the updates of every client in the shard; under secure
    aggregation, their masked inputs (secagg_messages: the round's key advertisements and
    key shares). With clients.runtime=agents the shard's agents do it on their own data."""
    plan = RoundPlan.load(plan_path)
    round_number = plan.cohort.round_number
    fault = (
        _injected_fault(config, round_number, shard, updates_path) if plan.cohort.clients else None
    )
    if fault == "lost":
        return
    clients = [] if plan.cohort.stopped else plan.cohort.shards[shard]
    sent = runtime.for_config(config).updates(plan, clients, secagg_messages)
    if fault == fault_schedule.CORRUPT and sent:
        sent[0] = faults.corrupt(sent[0])
        faults.record(config, round_number, f"local_train-{shard}", fault, 1, "corrupted")
    save_shard(updates_path, round_number, shard, sent)
    if sent:
        print(
            f"round {round_number} shard {shard}: clients "
            f"{', '.join(str(u.client_id) for u in sent)} sent updates in "
            f"{sum(u.duration_s for u in sent):.2f}s",
            flush=True,
        )


def _injected_fault(config: RunConfig, round_number: int, shard: int, updates_path) -> str | None:
    """Crash or hang the task (on its first attempt; crash_always on every attempt); when
    that attempt is the last one (no retries left), write an empty shard instead, as the
    orchestrator giving up on the task would, so the round goes on without it."""
    site = f"local_train-{shard}"
    attempt = faults.start_attempt(config, round_number, site)
    fault = faults.task_fault(config, round_number, shard)
    if fault == fault_schedule.CRASH_ALWAYS or (
        fault in (fault_schedule.CRASH, fault_schedule.HANG) and attempt == 1
    ):
        if not faults.final_attempt(config, attempt):
            faults.fail_task(config, round_number, site, fault, attempt)
        if fault == fault_schedule.HANG:  # held until the deadline, then given up on
            time.sleep(config.simulation.faults.task_hang_s)
        faults.record(config, round_number, site, fault, attempt, "no retries left: shard lost")
        save_shard(updates_path, round_number, shard, [])
        return "lost"
    return fault if fault == fault_schedule.CORRUPT and attempt == 1 else None
