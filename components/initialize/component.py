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
    segment's model and registry, continue it; returns the MLflow run id."""
    from fedpipe import config, stages

    run_config = config.from_json(config_json)
    last_round = first_round + segment_rounds - 1
    if first_round < 1 or last_round > run_config.training.rounds:
        raise config.ConfigError(
            "rounds",
            run_config.training.rounds,
            f"at least {last_round}, the last round of this segment (rounds {first_round}-"
            f"{last_round})",
        )
    model.metadata.update(
        {"framework": "keras", "model": run_config.model.name, "round": first_round - 1}
    )
    if previous_model is None:
        return stages.initialize(run_config, model.path, registry.path, training_id)
    return stages.continue_training(
        run_config,
        previous_model.path,
        previous_registry.path,
        model.path,
        registry.path,
        first_round,
        mlflow_run_id,
    )
