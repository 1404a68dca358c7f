"""Smoke test run inside the built runtime image (images/build.sh copies it and components/
into a throwaway container and runs it as the image's user): three real components,
loaded from their compiled component.yaml and run through kfp.local's subprocess runner,
which starts each one with the YAML's own container command (`python3 -m
kfp.dsl.executor_main ...`), as a Kubeflow pod would. initialize builds the round-0 model,
the client registry and an MLflow run (SQLite store in a scratch folder); select draws the
first cohort from that registry; broadcast turns the model and cohort into the round's
plan.

    python smoke_components.py COMPONENTS_DIR SCRATCH_DIR
"""

import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

from kfp import components, dsl, local
from kfp.dsl import Artifact

from fedpipe import config


class Outputs(NamedTuple):
    run_id: str
    cohort: list
    plan: Artifact


def main(components_dir: Path, scratch: Path) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(scratch / "pipeline_root"),
    )
    run_config = config.from_mapping(
        {
            "data.num_clients": 4,
            "training.rounds": 1,
            "selection.cohort_size": 2,
            "tracking.uri": f"sqlite:///{scratch}/mlflow.db",
        }
    )
    config_json = run_config.to_json()

    def load(stage: str) -> components.YamlComponent:
        return components.load_component_from_file(str(components_dir / stage / "component.yaml"))

    initialize, select, broadcast = load("initialize"), load("select"), load("broadcast")
    started = time.monotonic()

    @dsl.pipeline(name="image-smoke")
    def smoke(config_json: str) -> Outputs:
        init = initialize(
            config_json=config_json,
            training_id="image-smoke",
            first_round=1,
            segment_rounds=1,
            mlflow_run_id="",
        )
        cohort = select(config_json=config_json, registry=init.outputs["registry"], round_number=1)
        plan = broadcast(
            config_json=config_json, model=init.outputs["model"], cohort=cohort.outputs["cohort"]
        )
        return Outputs(init.outputs["Output"], cohort.outputs["Output"], plan.outputs["plan"])

    outputs = smoke(config_json=config_json).outputs
    chosen, plan_path = outputs["cohort"], Path(outputs["plan"].path)
    assert isinstance(chosen, list) and chosen, chosen
    assert plan_path.is_file() and plan_path.stat().st_size > 0, plan_path
    print(
        json.dumps(
            {
                "mlflow_run_id": outputs["run_id"],
                "cohort": chosen,
                "plan_bytes": plan_path.stat().st_size,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
