from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def share_keys(
    config_json: str,
    plan: Input[Artifact],
    shard: int,
    transcript: Input[Artifact],
    key_shares: Output[Artifact],
):
    """Secure aggregation step 2 (client side): each client's encrypted key shares.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        plan: The round plan from broadcast.
        shard: Which of the cohort's shards this task serves.
        transcript: The relayed key advertisements.
        key_shares: The shard's clients' encrypted shares for their neighbours.
    """
    from fedpipe import config, stages

    stages.share_keys(
        config.from_json(config_json), plan.path, shard, [transcript.path], key_shares.path
    )
