from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def broadcast_model(
    config_json: str, model: Input[Model], cohort: Input[Artifact], plan: Output[Artifact]
):
    """Publish the round plan the clients read.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        model: The current global model.
        cohort: The round's cohort from select.
        plan: The round plan: global weights, training hyper-parameters, cohort and shards.
    """
    from fedpipe import config, stages

    stages.broadcast(config.from_json(config_json), model.path, cohort.path, plan.path)
