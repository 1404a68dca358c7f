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
    """Held-out accuracy of the new model; updates the client registry; logs the round."""
    import json

    from fedpipe import config, stages
    from fedpipe.aggregation.outcome import AggregationOutcome
    from fedpipe.artifacts.client_registry import ClientRegistry
    from fedpipe.ops import round_health, segments
    from fedpipe.privacy import accounting as privacy_accounting

    run_config = config.from_json(config_json)
    result = stages.evaluate(
        run_config,
        model.path,
        registry.path,
        outcome.path,
        new_registry.path,
        mlflow_run_id,
    )
    metrics.log_metric("accuracy", result.accuracy)
    metrics.log_metric("loss", result.loss)
    rounds = ClientRegistry.load(new_registry.path).completed_rounds
    spent = privacy_accounting.reported_epsilon(run_config, rounds)
    if spent is not None:
        metrics.log_metric("epsilon", spent)
    round_outcome = AggregationOutcome.load(outcome.path)
    if not round_outcome.skipped:  # the round's health, beside its accuracy in the KFP UI
        for name, value in round_health.of_round(run_config, round_outcome).metrics().items():
            metrics.log_metric(name.replace("/", "_"), value)
    # Where the next segment finds this round's model and registry (fedpipe submit reads it).
    segments.log_checkpoint(
        run_config,
        mlflow_run_id,
        round_outcome.round_number,
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
