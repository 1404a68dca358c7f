"""The in-process simulation: the pipeline's stages called in the pipeline's order.

No KFP and no subprocesses, so research sweeps are fast; the same stage functions and
the same artifacts mean the simulation and the pipeline give the same model.
"""

from __future__ import annotations

import dataclasses
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fedpipe import preflight, stages
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.clients import runtime as client_runtime
from fedpipe.config import RunConfig
from fedpipe.ops import machine
from fedpipe.secagg import rounds as secure_aggregation
from fedpipe.simulation import faults
from fedpipe.stages.register import Registration
from fedpipe.training import trainer


@dataclasses.dataclass(frozen=True)
class SimulationResult:
    model: GlobalModel
    mlflow_run_id: str
    accuracy: list[float]  # held-out accuracy after each round
    registration: Registration | None


def simulate(
    config: RunConfig, workdir: str | Path, *, run_name: str = "simulation", register: bool = True
) -> SimulationResult:
    """Run every round and (optionally) register the final model; artifacts go to workdir."""
    work = Path(workdir)
    config = client_runtime.with_state_dir(
        faults.with_state_dir(preflight.check(config), work), work
    )
    model, registry = work / "round_000" / "model.npz", work / "round_000" / "registry.json"
    run_id = stages.initialize(config, model, registry, run_name=run_name)
    accuracy = []
    for n in range(1, config.training.rounds + 1):
        out = work / f"round_{n:03d}"
        shard_ids = stages.select(config, n, registry, out / "cohort.json")
        stages.broadcast(config, model, out / "cohort.json", out / "plan.npz")
        update_paths = [out / f"updates_{s}.npz" for s in shard_ids]
        secure = secure_aggregation.enabled(config)
        messages = _share_keys(config, out, shard_ids) if secure else []
        _train_shards(config, out / "plan.npz", shard_ids, update_paths, messages)
        if secure:
            messages = _unmask(config, out, shard_ids, messages, update_paths)
        faults.retrying(
            config,
            stages.aggregate,
            config,
            out / "plan.npz",
            model,
            update_paths,
            out / "model.npz",
            out / "outcome.json",
            messages,
        )
        result = stages.evaluate(
            config, out / "model.npz", registry, out / "outcome.json", out / "registry.json", run_id
        )
        accuracy.append(result.accuracy)
        model, registry = out / "model.npz", out / "registry.json"
    import mlflow

    mlflow.flush_async_logging()  # evaluate logs each round's metrics in the background
    registration = (
        stages.register(config, model, registry, run_id, pipeline_run=run_name)
        if register
        else None
    )
    return SimulationResult(GlobalModel.load(model), run_id, accuracy, registration)


def _train_shards(
    config: RunConfig,
    plan: Path,
    shard_ids: list[int],
    update_paths: list[Path],
    messages: list[Path],
) -> None:
    """Local training of the round's shards, as many at a time as there are cores (as the
    pipeline runs them in parallel tasks). TensorFlow releases the GIL while a graph runs,
    so threads use the cores; each thread trains with its own model (trainer.worker_slot),
    and a client's update depends only on the plan, its data and its seed, so the result
    is the same as training the shards one after the other."""

    workers = min(len(shard_ids), machine.usable_cores())
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(workers):
        slots.put(slot)

    def train(shard: int, path: Path) -> None:
        slot = slots.get()  # a model no other running thread uses
        try:
            with trainer.worker_slot(slot):
                faults.retrying(config, stages.local_train, config, plan, shard, path, messages)
        finally:
            slots.put(slot)

    if workers <= 1:
        for shard, path in zip(shard_ids, update_paths, strict=True):
            train(shard, path)
        return
    with ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(train, shard, path)
            for shard, path in zip(shard_ids, update_paths, strict=True)
        ]
        for future in futures:
            future.result()


def _share_keys(config: RunConfig, out: Path, shard_ids: list[int]) -> list[Path]:
    """Secure aggregation steps 1 and 2 as the pipeline runs them: each shard's clients
    advertise keys, the server relays them, each shard shares keys, the server relays all.
    Returns the transcript that local train reads."""
    plan, keys, shared = out / "plan.npz", out / "secagg_keys.json", out / "secagg_shares.json"
    ads = [out / f"secagg_advertise_{s}.json" for s in shard_ids]
    for shard, path in zip(shard_ids, ads, strict=True):
        stages.advertise_keys(config, plan, shard, path)
    stages.relay_messages(ads, keys)
    shares = [out / f"secagg_share_keys_{s}.json" for s in shard_ids]
    for shard, path in zip(shard_ids, shares, strict=True):
        stages.share_keys(config, plan, shard, [keys], path)
    stages.relay_messages([keys, *shares], shared)
    return [shared]


def _unmask(
    config: RunConfig,
    out: Path,
    shard_ids: list[int],
    transcript: list[Path],
    update_paths: list[Path],
) -> list[Path]:
    """Secure aggregation step 4: the server's request, each shard's confirmations (the
    consistency check) relayed, each shard's responses, and the whole transcript relayed
    to aggregate."""
    plan, request = out / "plan.npz", out / "secagg_unmask_request.json"
    stages.request_unmasking(config, plan, transcript, update_paths, request)
    confirms = [out / f"secagg_confirm_{s}.json" for s in shard_ids]
    for shard, path in zip(shard_ids, confirms, strict=True):
        stages.confirm_survivors(config, plan, shard, [request], path)
    confirmed = out / "secagg_confirmed.json"
    stages.relay_messages([request, *confirms], confirmed)
    responses = [out / f"secagg_unmask_response_{s}.json" for s in shard_ids]
    for shard, path in zip(shard_ids, responses, strict=True):
        stages.unmask_response(config, plan, shard, [confirmed], path)
    stages.relay_messages([confirmed, *responses], out / "secagg_transcript.json")
    return [out / "secagg_transcript.json"]
