from typing import List

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
):
    """Validate the shards' updates, check the quorum, aggregate, step the server optimizer."""
    from fedpipe import config, stages

    result = stages.aggregate(
        config.from_json(config_json),
        plan.path,
        model.path,
        [u.path for u in updates],
        new_model.path,
        outcome.path,
    )
    new_model.metadata.update({"framework": "keras", "round": result.round_number})
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
