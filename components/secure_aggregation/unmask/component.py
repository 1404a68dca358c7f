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
    the shard's surviving clients; honest clients refuse an unsafe request.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        plan: The round plan from broadcast.
        shard: Which of the cohort's shards this task serves.
        request: The transcript ending with the server's unmasking request.
        responses: The shard's clients' answers.
    """
    from fedpipe import config, stages

    stages.unmask_response(
        config.from_json(config_json), plan.path, shard, [request.path], responses.path
    )
