from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def broadcast_model(
    config_json: str, model: Input[Model], cohort: Input[Artifact], plan: Output[Artifact]
):
    """Publish the round plan: global weights, hyper-parameters and the cohort's shards."""
    from fedpipe import config, stages

    stages.broadcast(config.from_json(config_json), model.path, cohort.path, plan.path)
