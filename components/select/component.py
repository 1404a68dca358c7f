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
    """Choose the cohort of round round_number + round_offset (a segment passes its first
    round and each round's place in it); returns the shard indices local training fans out
    over."""
    from fedpipe import config, stages

    return stages.select(
        config.from_json(config_json), round_number + round_offset, registry.path, cohort.path
    )
