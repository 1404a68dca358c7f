"""Initialize: the round-0 global model, the client registry and the MLflow parent run."""

from __future__ import annotations

from pathlib import Path

from fedpipe import preflight
from fedpipe.aggregation.chain import build_chain
from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.config import ConfigError, RunConfig
from fedpipe.data import partition
from fedpipe.ops import tracking
from fedpipe.privacy import randomness
from fedpipe.training import trainer


def initialize(
    config: RunConfig,
    model_path: str | Path,
    registry_path: str | Path,
    run_name: str,
    compiled_rounds: int | None = None,
) -> str:
    """Write the initial model and registry; return the MLflow run id every stage logs to.
    A config that cannot run, or (in a compiled pipeline) whose rounds differ from the
    compiled ones, is refused before anything is written."""
    preflight.check(config)
    if compiled_rounds is not None and config.training.rounds != compiled_rounds:
        raise ConfigError(
            "training.rounds",
            config.training.rounds,
            f"{compiled_rounds}, the rounds this pipeline was compiled for",
        )
    model_trainer = trainer.for_config(config)
    weights = model_trainer.initial_weights()
    state = build_chain(config).initial_state(weights.size)
    GlobalModel(weights, model_trainer.spec, state, round_number=0).save(model_path)

    histograms = partition.label_histograms(config)
    registry = ClientRegistry(
        clients=[
            ClientRecord(client_id=i, num_examples=sum(h), label_histogram=h)
            for i, h in enumerate(histograms)
        ]
    )
    initial = model_trainer.evaluate(
        weights, model_trainer.data.x_heldout, model_trainer.data.y_heldout
    )
    registry.last_accuracy = initial.accuracy
    registry.save(registry_path)
    run_id = tracking.start_run(
        config,
        run_name,
        tags={
            "fedpipe.dataset": config.data.dataset,
            "fedpipe.partitioner": config.data.partitioner,
            **randomness.run_tags(config.privacy.mode),
        },
    )
    mlflow_client = tracking.client(config)
    mlflow_client.log_metric(run_id, "accuracy", initial.accuracy, step=0)
    mlflow_client.log_metric(run_id, "loss", initial.loss, step=0)
    if not config.dp_enabled:  # per-client label counts are client-level data
        mlflow_client.log_dict(
            run_id, {str(i): h for i, h in enumerate(histograms)}, "clients/label_histograms.json"
        )
    print(
        f"initialized {config.data.num_clients} clients ({config.data.partitioner} split of "
        f"{config.data.dataset}), model {config.model.name} with {weights.size:,} parameters, "
        f"initial accuracy {initial.accuracy:.3f}; MLflow run {run_id}",
        flush=True,
    )
    return run_id
