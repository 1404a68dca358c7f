from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def select_clients(
    config_json: str, round_number: int, registry: Input[Artifact], cohort: Output[Artifact]
) -> List[int]:
    """Choose the round's cohort with the configured selection policy.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        round_number: The round, from 1.
        registry: The client registry (history the learned policies read).
        cohort: The cohort: clients, their shards and announced weights.

    Returns:
        The shard indices local training fans out over (empty after an early stop).
    """
    from fedpipe import config, stages

    return stages.select(config.from_json(config_json), round_number, registry.path, cohort.path)
