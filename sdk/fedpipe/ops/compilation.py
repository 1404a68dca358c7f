"""Compiling the pipeline and the components to KFP IR YAML."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from fedpipe.config import RunConfig

# (stage folder, component function) of every component, in pipeline order.
COMPONENTS = (
    ("initialize", "initialize"),
    ("select", "select_clients"),
    ("broadcast", "broadcast_model"),
    ("local_train", "local_train"),
    ("secure_aggregate", "secure_aggregate"),
    ("evaluate", "evaluate"),
    ("register", "register"),
    ("secagg_advertise", "advertise_keys"),
    ("secagg_relay", "relay_messages"),
    ("secagg_share_keys", "share_keys"),
    ("secagg_request", "request_unmasking"),
    ("secagg_confirm", "confirm_survivors"),
    ("secagg_unmask", "unmask_response"),
)


def _set_image(path: Path, image: str | None) -> None:
    """Point every executor of a compiled spec at another runtime image."""
    if image is None:
        return
    spec = yaml.safe_load(path.read_text())
    for executor in spec["deploymentSpec"]["executors"].values():
        executor["container"]["image"] = image
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def compile_pipeline(config: RunConfig, output: Path, image: str | None = None) -> Path:
    from kfp import compiler

    from fedpipe.pipelines import federated_training

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(federated_training.build(config), str(output))
    _set_image(output, image)
    return output


def component_yaml_path(stage: str) -> Path:
    import fedpipe.components

    return Path(fedpipe.components.__file__).parent / stage / "component.yaml"


def compile_component(stage: str, function: str, output: Path, image: str | None = None) -> Path:
    from kfp import compiler

    module = importlib.import_module(f"fedpipe.components.{stage}.component")
    compiler.Compiler().compile(getattr(module, function), str(output))
    _set_image(output, image)
    return output


def compile_components(image: str | None = None) -> list[Path]:
    return [
        compile_component(stage, function, component_yaml_path(stage), image)
        for stage, function in COMPONENTS
    ]
