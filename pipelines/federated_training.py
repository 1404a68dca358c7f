"""The federated training pipeline, one segment at a time: initialize (or continue), a fixed
number of rounds, and register after the last segment.

KFP v2 has no sequential loop, so the round sub-pipeline is called once per round at
compile time, each call consuming the previous round's model and client registry. A
pipeline holds one segment of rounds_per_segment rounds, so its size does not grow with the
training's rounds; fedpipe.ops.segments chains segments, passing the previous segment's
model and registry by URI (dsl.importer) and the training's MLflow run id.
"""

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
from fedpipe.ops import kubernetes, segments
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
        round_offset: int,
        mlflow_run_id: str,
        model: Input[Model],
        registry: Input[Artifact],
    ) -> RoundOutputs:
        """Round round_number + round_offset (a segment's first round and the place in it:
        KFP has no arithmetic on parameters, select adds them)."""
        retry = _retry_policy(retries, backoff_s)
        return _round(
            config_json, round_number, round_offset, mlflow_run_id, model, registry, secure, retry
        )

    return round_pipeline


def _round(
    config_json, round_number, round_offset, mlflow_run_id, model, registry, secure: bool, retry
):
    select_task = select_clients(
        config_json=config_json,
        round_number=round_number,
        round_offset=round_offset,
        registry=registry,
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


class SegmentOutputs(NamedTuple):
    model: Model
    registry: Artifact
    mlflow_run_id: str


class TrainingOutputs(NamedTuple):
    model: Model
    registry: Artifact
    mlflow_run_id: str
    registration: Markdown


def segment_rounds(config: RunConfig) -> int:
    """The rounds one segment pipeline holds."""
    return segments.rounds_per_segment(config)


def build(
    config: RunConfig,
    rounds: int | None = None,
    *,
    continuation: bool = False,
    register_model: bool = True,
):
    """A segment pipeline of `rounds` rounds (default: segment_rounds(config)), starting at
    its first_round parameter. The first segment initializes the training; a continuation
    imports the previous segment's model and registry from their URIs. With register_model
    the last round's model is registered. The config is the default of config_json."""
    rounds = rounds or segment_rounds(config)
    secure = secure_aggregation_enabled(config)
    round_pipeline = federated_secure_round if secure else federated_round
    if config.pipeline.task_retries or kubernetes.active():  # sub-pipeline tasks built with them
        round_pipeline = _round_pipeline(
            secure, config.pipeline.task_retries, config.pipeline.retry_backoff_s
        )
    retry = _retry_policy(config.pipeline.task_retries, config.pipeline.retry_backoff_s)

    def body(config_json, training_id, first_round, mlflow_run_id, model_uri, registry_uri):
        previous = {}
        if continuation:
            for name, uri, cls in (
                ("previous_model", model_uri, Model),
                ("previous_registry", registry_uri, Artifact),
            ):
                importer_task = dsl.importer(artifact_uri=uri, artifact_class=cls, reimport=False)
                importer_task.set_display_name(f"import-{name.replace('_', '-')}")
                previous[name] = importer_task.output
        init_task = initialize(
            config_json=config_json,
            training_id=training_id,
            first_round=first_round,
            segment_rounds=rounds,
            mlflow_run_id=mlflow_run_id,
            **previous,
        )
        # Caching is by inputs: a fresh training has a new training_id, so nothing of an
        # earlier training is reused; a resumed one passes the same inputs and reuses the
        # tasks its crashed attempt finished.
        retry(init_task).set_display_name("initialize" if not continuation else "continue")
        run_id = init_task.outputs["Output"]
        model, registry = init_task.outputs["model"], init_task.outputs["registry"]
        for offset in range(rounds):
            round_task = round_pipeline(
                config_json=config_json,
                round_number=first_round,
                round_offset=offset,
                mlflow_run_id=run_id,
                model=model,
                registry=registry,
            )
            round_task.set_display_name(f"segment-round-{offset + 1}")
            model, registry = round_task.outputs["model"], round_task.outputs["registry"]
        if not register_model:
            return SegmentOutputs(model=model, registry=registry, mlflow_run_id=run_id)
        register_task = register(
            config_json=config_json,
            mlflow_run_id=run_id,
            pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            model=model,
            registry=registry,
        )
        retry(register_task).set_display_name("register")
        return TrainingOutputs(
            model=model,
            registry=registry,
            mlflow_run_id=run_id,
            registration=register_task.outputs["report"],
        )

    name = "federated-training" if not continuation else "federated-training-continued"
    description = f"Federated learning, a segment of {rounds} rounds" + (
        ", then MLflow registry promotion" if register_model else ""
    )
    outputs = TrainingOutputs if register_model else SegmentOutputs
    default = config.to_json()
    if continuation:

        @dsl.pipeline(name=name, description=description)
        def federated_training(
            model_uri: str,
            registry_uri: str,
            mlflow_run_id: str,
            training_id: str,
            first_round: int,
            config_json: str = default,
        ) -> outputs:
            return body(
                config_json, training_id, first_round, mlflow_run_id, model_uri, registry_uri
            )

    else:

        @dsl.pipeline(name=name, description=description)
        def federated_training(
            training_id: str = "federated-training",
            first_round: int = 1,
            config_json: str = default,
        ) -> outputs:
            return body(config_json, training_id, first_round, "", "", "")

    return federated_training


def build_registration(config: RunConfig):
    """Register a training that stopped early (target accuracy or privacy budget) at the
    end of a segment that was not its last: the segment's model and registry by URI."""

    @dsl.pipeline(
        name="federated-training-register",
        description="MLflow registration of a federated training that stopped early",
    )
    def registration(
        model_uri: str, registry_uri: str, mlflow_run_id: str, config_json: str = config.to_json()
    ) -> Markdown:
        model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
        registry = dsl.importer(artifact_uri=registry_uri, artifact_class=Artifact, reimport=False)
        register_task = register(
            config_json=config_json,
            mlflow_run_id=mlflow_run_id,
            pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            model=model.output,
            registry=registry.output,
        )
        _retry_policy(config.pipeline.task_retries, config.pipeline.retry_backoff_s)(register_task)
        return register_task.outputs["report"]

    return registration
