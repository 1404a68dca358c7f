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
    """Initial global model, client registry and MLflow parent run; returns the run id."""
    from fedpipe import config, stages

    run_config = config.from_json(config_json)
    if run_config.training.rounds != compiled_rounds:
        raise config.ConfigError(
            "rounds",
            run_config.training.rounds,
            f"{compiled_rounds}, the rounds this pipeline was compiled for",
        )
    model.metadata.update({"framework": "keras", "model": run_config.model.name, "round": 0})
    return stages.initialize(run_config, model.path, registry.path, run_name)
