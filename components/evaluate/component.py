from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Input, Metrics, Model, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def evaluate(
    config_json: str,
    mlflow_run_id: str,
    model: Input[Model],
    registry: Input[Artifact],
    outcome: Input[Artifact],
    new_registry: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> float:
    """Score the new global model on the held-out set, update the client registry, and log
    the round to MLflow and to this task's Metrics (the same values).

    Args:
        config_json: The run config as JSON (fedpipe.config).
        mlflow_run_id: The MLflow run every stage of this training logs to.
        model: The global model the round's aggregation wrote.
        registry: The client registry before the round.
        outcome: The round's aggregation outcome.
        new_registry: The client registry after the round.
        metrics: The round's global metrics (accuracy, loss, epsilon, round health, ...).
        confusion: The confusion matrix on the held-out set.

    Returns:
        The held-out accuracy of the new model.
    """
    import json

    from fedpipe import config, stages
    from fedpipe.aggregation.outcome import AggregationOutcome
    from fedpipe.artifacts.client_registry import ClientRegistry
    from fedpipe.ops import segments

    run_config = config.from_json(config_json)
    result = stages.evaluate(
        run_config,
        model.path,
        registry.path,
        outcome.path,
        new_registry.path,
        mlflow_run_id,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name.replace("/", "_"), value)
    # Where the next segment finds this round's model and registry (fedpipe submit reads it).
    segments.log_checkpoint(
        run_config,
        mlflow_run_id,
        AggregationOutcome.load(outcome.path).round_number,
        model.uri,
        new_registry.uri,
        ClientRegistry.load(new_registry.path),
    )
    labels = [str(i) for i in range(len(result.confusion_matrix))]
    confusion.log_confusion_matrix(labels, result.confusion_matrix.tolist())
    # kfp.local's cache treats an output artifact with no file as missing (a cache miss),
    # and metrics live in metadata: give them files so a resumed run can reuse this task.
    for artifact in (metrics, confusion):
        with open(artifact.path, "w") as f:
            json.dump(artifact.metadata, f)
    return result.accuracy
