from kfp import dsl
from kfp.dsl import Artifact, Model, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def initialize(
    config_json: str,
    compiled_rounds: int,
    run_name: str,
    model: Output[Model],
    registry: Output[Artifact],
) -> str:
    """The round-0 global model, the client registry and the MLflow parent run.

    Args:
        config_json: The run config as JSON (fedpipe.config); refused before anything runs
            if it cannot work, or if its rounds differ from the compiled ones.
        compiled_rounds: The rounds this pipeline was compiled for.
        run_name: The name of the MLflow run (the pipeline job's name).
        model: The initial global model (weights, spec, server state).
        registry: The client registry every round reads and updates.

    Returns:
        The MLflow run id every stage of this training logs to.
    """
    from fedpipe import config, stages

    run_config = config.from_json(config_json)
    model.metadata.update({"framework": "keras", "model": run_config.model.name, "round": 0})
    return stages.initialize(
        run_config, model.path, registry.path, run_name, compiled_rounds=compiled_rounds
    )
