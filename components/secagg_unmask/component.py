from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def unmask_response(
    config_json: str,
    plan: Input[Artifact],
    shard: int,
    request: Input[Artifact],
    responses: Output[Artifact],
):
    """Secure aggregation step 4 (client side): the shares the server's request asks of
    the shard's surviving clients; honest clients refuse an unsafe request."""
    from fedpipe import config, stages

    stages.unmask_response(
        config.from_json(config_json), plan.path, shard, [request.path], responses.path
    )
