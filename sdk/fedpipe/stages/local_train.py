"""Local train: each client of one shard trains from the global model on its own data."""

from __future__ import annotations

import time
from pathlib import Path

from fedpipe import attacks, partition, trainer
from fedpipe.client_update import ClientUpdate, save_shard
from fedpipe.config import RunConfig
from fedpipe.round_plan import RoundPlan


def local_train(
    config: RunConfig, plan_path: str | Path, shard: int, updates_path: str | Path
) -> None:
    """Write one artifact with the updates of every client in the shard."""
    plan = RoundPlan.load(plan_path)
    round_number = plan.cohort.round_number
    updates = []
    for client_id in plan.cohort.shards[shard]:
        started = time.perf_counter()
        x, y = partition.client_data(config, client_id)
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
        duration = time.perf_counter() - started
        updates.append(
            ClientUpdate.of(
                client_id,
                attacks.poison_update(config, round_number, client_id, result.delta),
                num_examples=result.num_examples,
                train_loss=result.train_loss,
                duration_s=duration,
            )
        )
    save_shard(updates_path, round_number, shard, updates)
    if updates:
        print(
            f"round {round_number} shard {shard}: trained clients "
            f"{', '.join(str(u.client_id) for u in updates)} on "
            f"{sum(u.num_examples for u in updates)} examples in "
            f"{sum(u.duration_s for u in updates):.2f}s",
            flush=True,
        )
