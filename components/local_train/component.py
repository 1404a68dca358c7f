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
    """Train every client of one shard from the global model; emit their updates (masked
    under secure aggregation, with the keys shared in secagg_transcript)."""
    from fedpipe import config, stages

    messages = [secagg_transcript.path] if secagg_transcript is not None else []
    stages.local_train(config.from_json(config_json), plan.path, shard, updates.path, messages)
    updates.metadata["shard"] = shard
