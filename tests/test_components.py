"""The compiled specs users load are the ones the code would compile now."""

import pytest
import yaml

from fedpipe import config
from fedpipe.ops import compilation


@pytest.mark.parametrize(("stage", "function"), compilation.COMPONENTS)
def test_committed_component_yaml_is_fresh(stage, function, tmp_path):
    committed = compilation.component_yaml_path(stage)
    assert committed.exists(), f"{committed} missing: run `make components`"
    fresh = compilation.compile_component(stage, function, tmp_path / "component.yaml")
    assert yaml.safe_load(committed.read_text()) == yaml.safe_load(fresh.read_text()), (
        f"{committed} is stale: run `make components`"
    )


def test_pipeline_unrolls_the_rounds_of_a_segment_and_takes_another_image(tmp_path):
    cfg = config.from_mapping({"training.rounds": 4})
    path = compilation.compile_pipeline(cfg, tmp_path / "p.yaml", image="registry.example/fp:1")
    spec = yaml.safe_load(path.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert [t for t in tasks if t.startswith("federated-round")] == [
        "federated-round",
        "federated-round-2",
        "federated-round-3",
        "federated-round-4",
    ]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/fp:1"}
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert config.from_json(default) == cfg
