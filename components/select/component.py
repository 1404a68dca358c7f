from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def select_clients(
    config_json: str,
    round_number: int,
    registry: Input[Artifact],
    cohort: Output[Artifact],
    round_offset: int = 0,
) -> List[int]:
    """Choose the cohort of round round_number + round_offset with the configured
    selection policy (a segment passes its first round and each round's place in it).

    Args:
        config_json: The run config as JSON (fedpipe.config).
        round_number: The segment's first round.
        round_offset: This round's place in the segment, from 0.
        registry: The client registry (history the learned policies read).
        cohort: The cohort: clients, their shards and announced weights.

    Returns:
        The shard indices local training fans out over (one empty shard after a stop).
    """
    from fedpipe import config, stages

    return stages.select(
        config.from_json(config_json), round_number + round_offset, registry.path, cohort.path
    )
