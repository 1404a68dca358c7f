"""Running the compiled pipeline on this machine through Kubeflow's local runner."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from fedpipe.clients import runtime as client_runtime
from fedpipe.config import RunConfig
from fedpipe.ops import compilation
from fedpipe.simulation import faults


@dataclasses.dataclass(frozen=True)
class LocalRun:
    config: RunConfig
    pipeline_yaml: Path
    model_path: Path
    registration: str
    seconds: float

    def summary(self) -> str:
        from fedpipe.ops.tracking import redact_uri

        uri = redact_uri(self.config.tracking.uri)
        return "\n".join(
            [
                "",
                self.registration.strip(),
                "",
                f"pipeline run finished in {self.seconds:.0f}s",
                f"  compiled pipeline: {self.pipeline_yaml}",
                f"  final model artifact: {self.model_path}",
                f"  MLflow store: {uri} (experiment '{self.config.tracking.experiment}')",
                f"  browse it: mlflow ui --backend-store-uri {uri}",
            ]
        )


def run_pipeline(config: RunConfig, pipeline_root: Path, *, resume: bool = False) -> LocalRun:
    """Compile the pipeline for this config, then execute the compiled YAML with kfp.local.
    With resume, tasks a previous run of the same config in this pipeline root finished
    are taken from kfp.local's cache instead of run again."""
    from kfp import components, local

    started = time.perf_counter()
    pipeline_root = pipeline_root.resolve()
    config = faults.with_state_dir(config, pipeline_root)
    config = client_runtime.with_state_dir(config, pipeline_root)
    pipeline_yaml = compilation.compile_pipeline(config, pipeline_root / "federated_training.yaml")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
        enable_caching=resume,
    )
    pipeline = components.load_component_from_file(str(pipeline_yaml))
    task = pipeline(config_json=config.to_json())
    report = Path(task.outputs["registration"].path)
    return LocalRun(
        config=config,
        pipeline_yaml=pipeline_yaml,
        model_path=Path(task.outputs["model"].path),
        registration=report.read_text(),
        seconds=time.perf_counter() - started,
    )
