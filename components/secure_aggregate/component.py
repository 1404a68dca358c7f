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
    """Aggregate the round: the aggregation chain over the shards' updates (under secure
    aggregation, over the unmasked sum of the masked inputs), the quorum, the server step.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        plan: The round plan broadcast to the clients.
        model: The previous global model (weights and server state).
        updates: Every shard's updates (masked inputs under secure aggregation).
        new_model: The new global model; not written below the quorum.
        outcome: Accepted, rejected and flagged clients and the chain's metrics.
        report: The round report (client-level rows left out under DP).
        secagg_transcript: The round's protocol messages, under secure aggregation.
    """
    from fedpipe import config, stages

    run_config = config.from_json(config_json)
    messages = [secagg_transcript.path] if secagg_transcript is not None else []
    result = stages.aggregate(
        run_config,
        plan.path,
        model.path,
        [u.path for u in updates],
        new_model.path,
        outcome.path,
        messages,
    )
    new_model.metadata.update({"framework": "keras", "round": result.round_number})
    with open(report.path, "w") as f:
        f.write(result.to_markdown(client_level=not run_config.dp_enabled))
