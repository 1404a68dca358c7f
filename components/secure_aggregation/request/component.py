from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def request_unmasking(
    config_json: str,
    plan: Input[Artifact],
    transcript: Input[Artifact],
    updates: Input[List[Artifact]],
    request: Output[Artifact],
):
    """Secure aggregation step 4 (server side): name the survivors and the dropped clients;
    fails the round when a secret can no longer be recovered.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        plan: The round plan from broadcast.
        transcript: The relayed advertisements and key shares.
        updates: Every shard's masked inputs (who sent one survived).
        request: The unmasking request, after the transcript so far.
    """
    from fedpipe import config, stages

    stages.request_unmasking(
        config.from_json(config_json),
        plan.path,
        [transcript.path],
        [u.path for u in updates],
        request.path,
    )
