"""Initialize: the round-0 global model, the client registry and the MLflow parent run."""

from __future__ import annotations

from pathlib import Path

from fedpipe.aggregation import server_optimizers
from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.config import RunConfig
from fedpipe.data import partition
from fedpipe.ops import tracking
from fedpipe.privacy import dp_fedavg
from fedpipe.training import forward, trainer


def initialize(
    config: RunConfig, model_path: str | Path, registry_path: str | Path, run_name: str
) -> str:
    """Write the initial model and registry; return the MLflow run id every stage logs to."""
    model_trainer = trainer.for_config(config)
    weights = model_trainer.initial_weights()
    state = server_optimizers.initial_state(config, weights.size)
    state.update(dp_fedavg.initial_state(config))
    GlobalModel(weights, model_trainer.spec, state, round_number=0).save(model_path)

    histograms = partition.label_histograms(config)
    registry = ClientRegistry(
        clients=[
            ClientRecord(client_id=i, num_examples=sum(h), label_histogram=h)
            for i, h in enumerate(histograms)
        ]
    )
    initial, _ = forward.heldout_evaluation(config, weights, model_trainer.spec)
    registry.last_accuracy = initial.accuracy
    registry.save(registry_path)
    run_id = tracking.start_run(
        config,
        run_name,
        tags={
            "fedpipe.dataset": config.data.dataset,
            "fedpipe.partitioner": config.data.partitioner,
        },
    )
    mlflow_client = tracking.client(config)
    mlflow_client.log_metric(run_id, "accuracy", initial.accuracy, step=0)
    mlflow_client.log_metric(run_id, "loss", initial.loss, step=0)
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
