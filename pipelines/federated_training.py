"""The federated training pipeline: initialize, N unrolled rounds, register.

KFP v2 has no sequential loop, so the round sub-pipeline is called once per round at
compile time, each call consuming the previous round's model and client registry.
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
from fedpipe.components.select.component import select_clients
from fedpipe.config import RunConfig


class RoundOutputs(NamedTuple):
    model: Model
    registry: Artifact


@dsl.pipeline(
    name="federated-round", description="One round: select, broadcast, train, aggregate, evaluate"
)
def federated_round(
    config_json: str,
    round_number: int,
    mlflow_run_id: str,
    model: Input[Model],
    registry: Input[Artifact],
) -> RoundOutputs:
    select_task = select_clients(
        config_json=config_json, round_number=round_number, registry=registry
    )
    select_task.set_display_name("select")
    broadcast_task = broadcast_model(
        config_json=config_json, model=model, cohort=select_task.outputs["cohort"]
    )
    broadcast_task.set_display_name("broadcast")
    with dsl.ParallelFor(select_task.outputs["Output"], name="shards") as shard:
        train_task = local_train(
            config_json=config_json, plan=broadcast_task.outputs["plan"], shard=shard
        )
        train_task.set_display_name("local-train")
    aggregate_task = secure_aggregate(
        config_json=config_json,
        plan=broadcast_task.outputs["plan"],
        model=model,
        updates=dsl.Collected(train_task.outputs["updates"]),
    )
    aggregate_task.set_display_name("secure-aggregate")
    evaluate_task = evaluate(
        config_json=config_json,
        mlflow_run_id=mlflow_run_id,
        model=aggregate_task.outputs["new_model"],
        registry=registry,
        outcome=aggregate_task.outputs["outcome"],
    )
    evaluate_task.set_display_name("evaluate")
    return RoundOutputs(
        model=aggregate_task.outputs["new_model"], registry=evaluate_task.outputs["new_registry"]
    )


class TrainingOutputs(NamedTuple):
    model: Model
    registration: Markdown


def build(config: RunConfig):
    """The federated training pipeline, config.rounds rounds unrolled; the config is the
    default of its one parameter, config_json (a run can pass another with the same rounds)."""
    rounds = config.rounds

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
        init_task.set_display_name("initialize")
        run_id = init_task.outputs["Output"]
        model, registry = init_task.outputs["model"], init_task.outputs["registry"]
        for n in range(1, rounds + 1):
            round_task = federated_round(
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
        register_task.set_display_name("register")
        return TrainingOutputs(model=model, registration=register_task.outputs["report"])

    return federated_training
