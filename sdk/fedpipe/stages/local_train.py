"""Local train: each client of one shard trains from the global model on its own data."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fedpipe.aggregation import compression
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ClientUpdate, save_shard
from fedpipe.config import RunConfig
from fedpipe.data import partition
from fedpipe.secagg import rounds as secure_aggregation
from fedpipe.simulation import attacks, client_systems, faults
from fedpipe.training import trainer


def local_train(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    updates_path: str | Path,
    secagg_messages: Sequence[str | Path] = (),
) -> None:
    """Write one artifact with the updates of every client in the shard; under secure
    aggregation, their masked inputs (secagg_messages: the round's key advertisements and
    key shares)."""
    plan = RoundPlan.load(plan_path)
    round_number = plan.cohort.round_number
    fault = (
        _injected_fault(config, round_number, shard, updates_path) if plan.cohort.clients else None
    )
    if fault == "lost":
        return
    updates = []
    for client_id in plan.cohort.shards[shard]:
        started = time.perf_counter()
        if faults.client_out(config, round_number, client_id):
            print(f"round {round_number}: client {client_id} is out (injected outage)", flush=True)
            continue
        x, y = partition.client_data(config, client_id)
        fate = client_systems.client_round(config, round_number, client_id, len(y)).fate
        if fate != client_systems.OK:  # a simulated straggler or crash sends nothing
            print(f"round {round_number}: client {client_id} sends no update ({fate})", flush=True)
            continue
        model_trainer = trainer.for_config(config)
        y = attacks.poison_labels(config, client_id, y, model_trainer.data.num_classes)
        result = model_trainer.train(
            plan.weights,
            x,
            y,
            epochs=plan.training.epochs,
            batch_size=plan.training.batch_size,
            learning_rate=plan.training.learning_rate,
            mu=plan.training.fedprox_mu,
            seed=[plan.seed, round_number, client_id],
        )
        delta = attacks.poison_update(config, round_number, client_id, result.delta)
        if config.compression != "none":  # the simulation's state dir: the workdir's
            delta = compression.through_the_wire(
                config.compression,
                config.compression_topk_fraction,
                delta,
                Path(updates_path).resolve().parent.parent / "client_state",
                client_id,
                round_number,
            )
        duration = time.perf_counter() - started
        updates.append(
            ClientUpdate.of(
                client_id,
                delta,
                num_examples=result.num_examples,
                train_loss=result.train_loss,
                duration_s=duration,
            )
        )
    if fault == faults.CORRUPT and updates:
        updates[0] = faults.corrupt(updates[0])
        faults.record(config, round_number, f"local_train-{shard}", fault, 1, "corrupted")
    sent = updates
    if secure_aggregation.enabled(config):
        sent = secure_aggregation.mask_updates(config, plan, updates, secagg_messages)
    save_shard(updates_path, round_number, shard, sent)
    if updates:
        print(
            f"round {round_number} shard {shard}: trained clients "
            f"{', '.join(str(u.client_id) for u in updates)} on "
            f"{sum(u.num_examples for u in updates)} examples in "
            f"{sum(u.duration_s for u in updates):.2f}s",
            flush=True,
        )


def _injected_fault(config: RunConfig, round_number: int, shard: int, updates_path) -> str | None:
    """Crash or hang the task (on its first attempt; crash_always on every attempt); when
    that attempt is the last one (no retries left), write an empty shard instead, as the
    orchestrator giving up on the task would, so the round goes on without it."""
    site = f"local_train-{shard}"
    attempt = faults.start_attempt(config, round_number, site)
    fault = faults.task_fault(config, round_number, shard)
    if fault == faults.CRASH_ALWAYS or (fault in (faults.CRASH, faults.HANG) and attempt == 1):
        if not faults.final_attempt(config, attempt):
            faults.fail_task(config, round_number, site, fault, attempt)
        if fault == faults.HANG:  # held until the deadline, then given up on
            time.sleep(config.task_hang_s)
        faults.record(config, round_number, site, fault, attempt, "no retries left: shard lost")
        save_shard(updates_path, round_number, shard, [])
        return "lost"
    return fault if fault == faults.CORRUPT and attempt == 1 else None
