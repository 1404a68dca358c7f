from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def register(
    config_json: str,
    mlflow_run_id: str,
    pipeline_run: str,
    model: Input[Model],
    registry: Input[Artifact],
    report: Output[Markdown],
) -> NamedTuple("Registration", version=str, promoted=bool, accuracy=float):
    """Register the final model in MLflow; move `champion` to it if it beats the champion.

    Args:
        config_json: The run config as JSON (fedpipe.config).
        mlflow_run_id: The MLflow run of this training.
        pipeline_run: The pipeline job's name, recorded on the model version.
        model: The final global model.
        registry: The final client registry.
        report: The registration verdict in Markdown.

    Returns:
        The version registered, whether it was promoted, and its held-out accuracy.
    """
    from collections import namedtuple

    from fedpipe import config, stages

    result = stages.register(
        config.from_json(config_json), model.path, registry.path, mlflow_run_id, pipeline_run
    )
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
    return namedtuple("Registration", "version promoted accuracy")(
        result.version, result.promoted, result.accuracy
    )
