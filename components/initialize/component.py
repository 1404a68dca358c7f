from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def initialize(
    config_json: str,
    training_id: str,
    first_round: int,
    segment_rounds: int,
    mlflow_run_id: str,
    model: Output[Model],
    registry: Output[Artifact],
    previous_model: Input[Model] = None,
    previous_registry: Input[Artifact] = None,
) -> str:
    """Start a training (round-0 model, client registry, MLflow run) or, given the previous
    segment's model and registry, continue it.

    Args:
        config_json: The run config as JSON (fedpipe.config); refused before anything runs
            if it cannot work, or if this segment's rounds lie outside it.
        training_id: The training this segment belongs to (its initialize's cache key).
        first_round: The first round of this segment.
        segment_rounds: How many rounds this segment holds.
        mlflow_run_id: The training's MLflow run (empty for the first segment).
        model: The global model the segment starts from.
        registry: The client registry the segment starts from.
        previous_model: The previous segment's last model (absent for the first segment).
        previous_registry: The previous segment's last registry.

    Returns:
        The MLflow run id every stage of this training logs to.
    """
    from fedpipe import config, stages

    run_config = config.from_json(config_json)
    model.metadata.update(
        {"framework": "keras", "model": run_config.model.name, "round": first_round - 1}
    )
    if previous_model is None:
        return stages.initialize(
            run_config, model.path, registry.path, training_id, (first_round, segment_rounds)
        )
    return stages.continue_training(
        run_config,
        previous_model.path,
        previous_registry.path,
        model.path,
        registry.path,
        first_round,
        mlflow_run_id,
    )
