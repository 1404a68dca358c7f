"""Initialize: the round-0 global model, the client registry and the MLflow parent run of
a training, or, for a later segment, the previous segment's model and registry carried on."""

from __future__ import annotations

import shutil
from pathlib import Path

from fedpipe import preflight
from fedpipe.aggregation.chain import build_chain
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.config import ConfigError, RunConfig
from fedpipe.data import partition
from fedpipe.ops import progress, release, tracking
from fedpipe.privacy import randomness
from fedpipe.training import forward, trainer


def initialize(
    config: RunConfig,
    model_path: str | Path,
    registry_path: str | Path,
    run_name: str,
    segment: tuple[int, int] | None = None,
) -> str:
    """Write the initial model and registry; return the MLflow run id every stage logs to.
    A config that cannot run, or (in a compiled pipeline) whose rounds do not hold the
    segment's (first round, rounds), is refused before anything is written."""
    preflight.check(config)
    if segment is not None:
        first_round, segment_rounds = segment
        last_round = first_round + segment_rounds - 1
        if first_round < 1 or last_round > config.training.rounds:
            raise ConfigError(
                "training.rounds",
                config.training.rounds,
                f"at least {last_round}, the last round of this segment (rounds "
                f"{first_round}-{last_round})",
            )
    model_trainer = trainer.for_config(config)
    weights = model_trainer.initial_weights()
    state = build_chain(config).initial_state(weights.size)
    GlobalModel(weights, model_trainer.spec, state, round_number=0).save(model_path)

    histograms = partition.label_histograms(config)
    registry = ClientRegistry.initial(histograms, release.client_level(config))
    initial, _ = forward.heldout_evaluation(config, weights, model_trainer.spec)
    registry.last_accuracy = initial.accuracy
    registry.save(registry_path)
    run_id = tracking.start_run(
        config,
        run_name,
        tags={
            "fedpipe.dataset": config.data.dataset,
            "fedpipe.partitioner": config.data.partitioner,
            **randomness.run_tags(config.privacy.mode),
            "fedpipe.training_id": run_name,
        },
    )
    mlflow_client = tracking.client(config)
    mlflow_client.log_metric(run_id, "accuracy", initial.accuracy, step=0)
    mlflow_client.log_metric(run_id, "loss", initial.loss, step=0)
    if release.client_level(config):  # per-client label counts are client-level data
        mlflow_client.log_dict(
            run_id, {str(i): h for i, h in enumerate(histograms)}, "clients/label_histograms.json"
        )
    print(
        f"initialized {config.data.num_clients} clients ({config.data.partitioner} split of "
        f"{config.data.dataset}), model {config.model.name} with {weights.size:,} parameters, "
        f"initial accuracy {initial.accuracy:.3f}; MLflow run {run_id}",
        flush=True,
    )
    progress.emit(
        "initialized",
        clients=config.data.num_clients,
        model=config.model.name,
        accuracy=initial.accuracy,
        mlflow_run_id=run_id,
    )
    return run_id


def continue_training(
    config: RunConfig,
    previous_model_path: str | Path,
    previous_registry_path: str | Path,
    model_path: str | Path,
    registry_path: str | Path,
    first_round: int,
    mlflow_run_id: str,
) -> str:
    """A later segment's start: the previous segment's model and client registry (client
    history, selection policy state, stop flags) become this segment's round-0 inputs, and
    its rounds log to the training's MLflow run. Refuses a model of another round, so a
    segment can never silently repeat or skip rounds."""
    model = GlobalModel.load(previous_model_path)
    registry = ClientRegistry.load(previous_registry_path)
    if registry.stopped:
        raise ValueError(f"the training has stopped ({registry.stop_reason}): nothing to continue")
    if model.round_number != first_round - 1:
        raise ValueError(
            f"the previous segment ended at round {model.round_number}, but this segment "
            f"starts at round {first_round}"
        )
    if not mlflow_run_id:
        raise ValueError("a continued training needs the MLflow run id of its first segment")
    Path(model_path).parent.mkdir(parents=True, exist_ok=True)
    Path(registry_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(previous_model_path, model_path)
    shutil.copyfile(previous_registry_path, registry_path)
    print(
        f"continuing training at round {first_round} of {config.training.rounds}; "
        f"MLflow run {mlflow_run_id}",
        flush=True,
    )
    return mlflow_run_id
