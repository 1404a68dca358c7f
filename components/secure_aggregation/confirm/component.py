from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def confirm_survivors(
    config_json: str,
    plan: Input[Artifact],
    shard: int,
    request: Input[Artifact],
    confirmations: Output[Artifact],
):
    """Secure aggregation consistency check (client side): each surviving client of the
    shard signs the unmasking request it was sent.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        plan: The round plan from broadcast.
        shard: Which of the cohort's shards this task serves.
        request: The transcript ending with the server's unmasking request.
        confirmations: The shard's clients' signatures on the survivor set.
    """
    from fedpipe import config, stages

    stages.confirm_survivors(
        config.from_json(config_json), plan.path, shard, [request.path], confirmations.path
    )
