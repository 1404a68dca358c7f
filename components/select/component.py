from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def select_clients(
    config_json: str, round_number: int, registry: Input[Artifact], cohort: Output[Artifact]
) -> List[int]:
    """Choose the round's cohort; returns the shard indices local training fans out over."""
    from fedpipe import config, stages

    return stages.select(config.from_json(config_json), round_number, registry.path, cohort.path)
