"""The federated training pipeline: initialize, N unrolled rounds, register.

KFP v2 has no sequential loop, so the round sub-pipeline is called once per round at
compile time, each call consuming the previous round's model and client registry.
"""

import hashlib
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model

from fedpipe.components.broadcast.component import broadcast_model
from fedpipe.components.evaluate.component import evaluate
from fedpipe.components.initialize.component import initialize
from fedpipe.components.local_train.component import local_train
from fedpipe.components.register.component import register
from fedpipe.components.secure_aggregate.component import secure_aggregate
from fedpipe.components.secure_aggregation.advertise.component import advertise_keys
from fedpipe.components.secure_aggregation.confirm.component import confirm_survivors
from fedpipe.components.secure_aggregation.relay.component import relay_messages
from fedpipe.components.secure_aggregation.request.component import request_unmasking
from fedpipe.components.secure_aggregation.share_keys.component import share_keys
from fedpipe.components.secure_aggregation.unmask.component import unmask_response
from fedpipe.components.select.component import select_clients
from fedpipe.config import RunConfig
from fedpipe.ops import kubernetes
from fedpipe.secagg.rounds import enabled as secure_aggregation_enabled


def _retry_policy(retries: int, backoff_s: int):
    """What every task of a round does on failure: retried `retries` times with exponential
    backoff (safe, since a stage given the same inputs writes the same outputs)."""

    def apply(task):
        kubernetes.apply_cluster_settings(task, kubernetes.active())
        if retries:
            task.set_retry(
                num_retries=retries, backoff_duration=f"{backoff_s}s", backoff_factor=2.0
            )
        return task

    return apply


class RoundOutputs(NamedTuple):
    model: Model
    registry: Artifact


def _secure_aggregation_keys(config_json: str, plan, shards, retry):
    """Protocol steps 1-2 around the server's relays: each shard's clients advertise keys,
    the server relays them, each shard shares keys, the server relays all of it. Returns
    the transcript local train masks with."""
    with dsl.ParallelFor(shards, name="advertise-shards") as shard:
        advertise_task = advertise_keys(config_json=config_json, plan=plan, shard=shard)
        retry(advertise_task).set_display_name("secagg-advertise-keys")
    keys_task = relay_messages(messages=dsl.Collected(advertise_task.outputs["advertisements"]))
    retry(keys_task).set_display_name("secagg-relay-keys")
    with dsl.ParallelFor(shards, name="share-shards") as shard:
        share_task = share_keys(
            config_json=config_json,
            plan=plan,
            shard=shard,
            transcript=keys_task.outputs["transcript"],
        )
        retry(share_task).set_display_name("secagg-share-keys")
    shares_task = relay_messages(
        messages=dsl.Collected(share_task.outputs["key_shares"]),
        previous=keys_task.outputs["transcript"],
    )
    retry(shares_task).set_display_name("secagg-relay-shares")
    return shares_task.outputs["transcript"]


def _secure_aggregation_unmasking(config_json: str, plan, shards, transcript, updates, retry):
    """Protocol step 4: the server's request; the consistency check (each shard's
    surviving clients sign the request, the server relays the signatures); each shard's
    surviving clients answer; the server relays the whole transcript to aggregate."""
    request_task = request_unmasking(
        config_json=config_json, plan=plan, transcript=transcript, updates=updates
    )
    retry(request_task).set_display_name("secagg-request-unmasking")
    with dsl.ParallelFor(shards, name="confirm-shards") as shard:
        confirm_task = confirm_survivors(
            config_json=config_json,
            plan=plan,
            shard=shard,
            request=request_task.outputs["request"],
        )
        retry(confirm_task).set_display_name("secagg-confirm-survivors")
    confirmed_task = relay_messages(
        messages=dsl.Collected(confirm_task.outputs["confirmations"]),
        previous=request_task.outputs["request"],
    )
    retry(confirmed_task).set_display_name("secagg-relay-confirmations")
    with dsl.ParallelFor(shards, name="unmask-shards") as shard:
        unmask_task = unmask_response(
            config_json=config_json,
            plan=plan,
            shard=shard,
            request=confirmed_task.outputs["transcript"],
        )
        retry(unmask_task).set_display_name("secagg-unmask")
    final_task = relay_messages(
        messages=dsl.Collected(unmask_task.outputs["responses"]),
        previous=confirmed_task.outputs["transcript"],
    )
    retry(final_task).set_display_name("secagg-relay-responses")
    return final_task.outputs["transcript"]


def _round_pipeline(secure: bool, retries: int = 0, backoff_s: int = 1):
    """The round sub-pipeline; with secure aggregation, the protocol's client-side fan-outs
    and server relays wrap local train, and aggregate unmasks only the sum."""

    @dsl.pipeline(
        name="federated-secure-round" if secure else "federated-round",
        description="One round: select, broadcast, train, aggregate, evaluate"
        + (" (secure aggregation)" if secure else ""),
    )
    def round_pipeline(
        config_json: str,
        round_number: int,
        mlflow_run_id: str,
        model: Input[Model],
        registry: Input[Artifact],
    ) -> RoundOutputs:
        retry = _retry_policy(retries, backoff_s)
        return _round(config_json, round_number, mlflow_run_id, model, registry, secure, retry)

    return round_pipeline


def _round(config_json, round_number, mlflow_run_id, model, registry, secure: bool, retry):
    select_task = select_clients(
        config_json=config_json, round_number=round_number, registry=registry
    )
    retry(select_task).set_display_name("select")
    broadcast_task = broadcast_model(
        config_json=config_json, model=model, cohort=select_task.outputs["cohort"]
    )
    retry(broadcast_task).set_display_name("broadcast")
    plan, shards = broadcast_task.outputs["plan"], select_task.outputs["Output"]
    # An optional artifact input is left out of the call, not passed as None.
    secagg = {}
    if secure:
        secagg["secagg_transcript"] = _secure_aggregation_keys(config_json, plan, shards, retry)
    with dsl.ParallelFor(shards, name="shards") as shard:
        train_task = local_train(config_json=config_json, plan=plan, shard=shard, **secagg)
        retry(train_task).set_display_name("local-train")
    if secure:
        secagg["secagg_transcript"] = _secure_aggregation_unmasking(
            config_json,
            plan,
            shards,
            secagg["secagg_transcript"],
            dsl.Collected(train_task.outputs["updates"]),
            retry,
        )
    aggregate_task = secure_aggregate(
        config_json=config_json,
        plan=plan,
        model=model,
        updates=dsl.Collected(train_task.outputs["updates"]),
        **secagg,
    )
    retry(aggregate_task).set_display_name("secure-aggregate" if secure else "aggregate")
    evaluate_task = evaluate(
        config_json=config_json,
        mlflow_run_id=mlflow_run_id,
        model=aggregate_task.outputs["new_model"],
        registry=registry,
        outcome=aggregate_task.outputs["outcome"],
    )
    retry(evaluate_task).set_display_name("evaluate")
    return RoundOutputs(
        model=aggregate_task.outputs["new_model"], registry=evaluate_task.outputs["new_registry"]
    )


federated_round = _round_pipeline(secure=False)
federated_secure_round = _round_pipeline(secure=True)


class TrainingOutputs(NamedTuple):
    model: Model
    registration: Markdown


def build(config: RunConfig):
    """The federated training pipeline, config.training.rounds rounds unrolled; the config is the
    default of its one parameter, config_json (a run can pass another with the same rounds)."""
    rounds = config.training.rounds
    round_pipeline = (
        federated_secure_round if secure_aggregation_enabled(config) else federated_round
    )
    resume_key = hashlib.sha256(config.to_json().encode()).hexdigest()
    retry = _retry_policy(config.pipeline.task_retries, config.pipeline.retry_backoff_s)
    if config.pipeline.task_retries or kubernetes.active():  # sub-pipeline tasks built with them
        round_pipeline = _round_pipeline(
            secure_aggregation_enabled(config),
            config.pipeline.task_retries,
            config.pipeline.retry_backoff_s,
        )

    @dsl.pipeline(
        name="federated-training",
        description=f"Federated learning over {rounds} rounds with MLflow registry promotion",
    )
    def federated_training(config_json: str = config.to_json()) -> TrainingOutputs:
        init_task = initialize(
            config_json=config_json,
            compiled_rounds=rounds,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        retry(init_task).set_display_name("initialize")
        # Resume: a re-run of the same config finds initialize in the cache whatever the run
        # is called, so every finished task downstream of it is a cache hit too.
        # (The key is of the compiled config: pass no other config_json when resuming.)
        init_task.set_caching_options(enable_caching=True, cache_key=resume_key)
        run_id = init_task.outputs["Output"]
        model, registry = init_task.outputs["model"], init_task.outputs["registry"]
        for n in range(1, rounds + 1):
            round_task = round_pipeline(
                config_json=config_json,
                round_number=n,
                mlflow_run_id=run_id,
                model=model,
                registry=registry,
            )
            round_task.set_display_name(f"round-{n}")
            model, registry = round_task.outputs["model"], round_task.outputs["registry"]
        register_task = register(
            config_json=config_json,
            mlflow_run_id=run_id,
            pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            model=model,
            registry=registry,
        )
        retry(register_task).set_display_name("register")
        return TrainingOutputs(model=model, registration=register_task.outputs["report"])

    return federated_training
