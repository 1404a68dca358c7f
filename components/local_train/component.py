from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def local_train(
    config_json: str,
    plan: Input[Artifact],
    shard: int,
    updates: Output[Artifact],
    secagg_transcript: Optional[Input[Artifact]] = None,
):
    """The updates of one shard's clients, from the client runtime.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        plan: The round plan from broadcast.
        shard: Which of the cohort's shards this task serves.
        updates: The shard's updates (masked inputs under secure aggregation).
        secagg_transcript: Under secure aggregation, the relayed key advertisements and
            shares the clients mask with.
    """
    from fedpipe import config, stages

    messages = [secagg_transcript.path] if secagg_transcript is not None else []
    stages.local_train(config.from_json(config_json), plan.path, shard, updates.path, messages)
    updates.metadata["shard"] = shard
