from typing import List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def secure_aggregate(
    config_json: str,
    plan: Input[Artifact],
    model: Input[Model],
    updates: Input[List[Artifact]],
    new_model: Output[Model],
    outcome: Output[Artifact],
    report: Output[Markdown],
    secagg_transcript: Optional[Input[Artifact]] = None,
):
    """Validate the shards' updates, check the quorum, aggregate, step the server optimizer."""
    from fedpipe import config, stages

    messages = [secagg_transcript.path] if secagg_transcript is not None else []
    result = stages.aggregate(
        config.from_json(config_json),
        plan.path,
        model.path,
        [u.path for u in updates],
        new_model.path,
        outcome.path,
        messages,
    )
    new_model.metadata.update({"framework": "keras", "round": result.round_number})
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
