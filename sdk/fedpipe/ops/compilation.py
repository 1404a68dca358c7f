"""Compiling the pipeline and the components to KFP IR YAML."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from fedpipe.config import RunConfig
from fedpipe.ops import kubernetes
from fedpipe.ops.kubernetes import ClusterSettings

# (stage folder, component function) of every component, in pipeline order.
COMPONENTS = (
    ("initialize", "initialize"),
    ("select", "select_clients"),
    ("broadcast", "broadcast_model"),
    ("local_train", "local_train"),
    ("secure_aggregate", "secure_aggregate"),
    ("evaluate", "evaluate"),
    ("register", "register"),
    ("secure_aggregation/advertise", "advertise_keys"),
    ("secure_aggregation/relay", "relay_messages"),
    ("secure_aggregation/share_keys", "share_keys"),
    ("secure_aggregation/request", "request_unmasking"),
    ("secure_aggregation/confirm", "confirm_survivors"),
    ("secure_aggregation/unmask", "unmask_response"),
)


def _set_image(path: Path, image: str | None) -> None:
    """Point every executor of a compiled spec at another runtime image."""
    if image is None:
        return
    # A spec compiled with kfp-kubernetes settings has a second document (the platform spec).
    spec, *platforms = yaml.safe_load_all(path.read_text())
    for executor in spec["deploymentSpec"]["executors"].values():
        executor["container"]["image"] = image
    path.write_text(yaml.safe_dump_all([spec, *platforms], sort_keys=False))


TARGETS = ("local", "kubernetes")


def compile_pipeline(
    config: RunConfig,
    output: Path,
    image: str | None = None,
    *,
    target: str = "local",
    cluster: ClusterSettings | None = None,
) -> Path:
    """Compile for kfp.local (`local`) or for a cluster (`kubernetes`: every task gets the
    secrets, state volume and pod sizes of `cluster`, see fedpipe.ops.kubernetes)."""
    from kfp import compiler

    from fedpipe.pipelines import federated_training

    if target not in TARGETS:
        raise ValueError(f"target {target!r}: one of {TARGETS}")
    output.parent.mkdir(parents=True, exist_ok=True)
    if target == "kubernetes":
        settings = cluster or ClusterSettings()
        with kubernetes.compiling_for(settings):
            pipeline = federated_training.build(kubernetes.cluster_config(config, settings))
    else:
        pipeline = federated_training.build(config)
    compiler.Compiler().compile(pipeline, str(output))
    _set_image(output, image)
    return output


def component_yaml_path(stage: str) -> Path:
    import fedpipe.components

    return Path(fedpipe.components.__file__).parent / stage / "component.yaml"


def compile_component(stage: str, function: str, output: Path, image: str | None = None) -> Path:
    from kfp import compiler

    module = importlib.import_module(f"fedpipe.components.{stage.replace('/', '.')}.component")
    compiler.Compiler().compile(getattr(module, function), str(output))
    _set_image(output, image)
    return output


def compile_components(image: str | None = None) -> list[Path]:
    return [
        compile_component(stage, function, component_yaml_path(stage), image)
        for stage, function in COMPONENTS
    ]
