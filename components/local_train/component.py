from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def local_train(config_json: str, plan: Input[Artifact], shard: int, updates: Output[Artifact]):
    """Train every client of one shard from the global model; emit their updates."""
    from fedpipe import config, stages

    stages.local_train(config.from_json(config_json), plan.path, shard, updates.path)
    updates.metadata["shard"] = shard
