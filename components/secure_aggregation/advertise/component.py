from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def advertise_keys(
    config_json: str, plan: Input[Artifact], shard: int, advertisements: Output[Artifact]
):
    """Secure aggregation step 1 (client side): the public keys of the shard's clients.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        plan: The round plan from broadcast.
        shard: Which of the cohort's shards this task serves.
        advertisements: The shard's key advertisements.
    """
    from fedpipe import config, stages

    stages.advertise_keys(config.from_json(config_json), plan.path, shard, advertisements.path)
