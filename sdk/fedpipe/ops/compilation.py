"""Compiling the pipeline and the components to KFP IR YAML."""

from __future__ import annotations

import dataclasses
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
        if "container" in executor:  # importers run in the backend, not in an image
            executor["container"]["image"] = image
    path.write_text(yaml.safe_dump_all([spec, *platforms], sort_keys=False))


TARGETS = ("local", "kubernetes")


def compile_pipeline(
    config: RunConfig,
    output: Path,
    image: str | None = None,
    *,
    rounds: int | None = None,
    continuation: bool = False,
    register_model: bool | None = None,
    target: str = "local",
    cluster: ClusterSettings | None = None,
) -> Path:
    """Compile one segment pipeline (default: the first segment, registering the model when
    it is the training's only segment), for kfp.local (`local`) or for a cluster
    (`kubernetes`: every task gets the secrets, state volume and pod sizes of `cluster`, see
    fedpipe.ops.kubernetes)."""
    from kfp import compiler

    from fedpipe.pipelines import federated_training

    if target not in TARGETS:
        raise ValueError(f"target {target!r}: one of {TARGETS}")
    rounds = rounds or federated_training.segment_rounds(config)
    if register_model is None:
        register_model = rounds >= config.training.rounds
    output.parent.mkdir(parents=True, exist_ok=True)
    if target == "kubernetes":
        settings = cluster or ClusterSettings()
        with kubernetes.compiling_for(settings):
            pipeline = federated_training.build(
                kubernetes.cluster_config(config, settings),
                rounds,
                continuation=continuation,
                register_model=register_model,
            )
    else:
        pipeline = federated_training.build(
            config, rounds, continuation=continuation, register_model=register_model
        )
    compiler.Compiler().compile(pipeline, str(output))
    _set_image(output, image)
    return output


def segment_file_name(rounds: int, continuation: bool, register_model: bool) -> str:
    kind = "continued" if continuation else "first"
    return f"segment-{kind}-{rounds}-rounds" + ("-register" if register_model else "") + ".yaml"


def compile_segment(
    config: RunConfig,
    directory: Path,
    rounds: int,
    *,
    continuation: bool,
    register_model: bool,
    image: str | None = None,
    target: str = "local",
    cluster: ClusterSettings | None = None,
) -> Path:
    """The segment pipeline of this shape in `directory`, compiled once per directory."""
    output = directory / segment_file_name(rounds, continuation, register_model)
    if output.exists():
        return output
    return compile_pipeline(
        config,
        output,
        image,
        rounds=rounds,
        continuation=continuation,
        register_model=register_model,
        target=target,
        cluster=cluster,
    )


def compile_registration(config: RunConfig, directory: Path, image: str | None = None) -> Path:
    """The registration-only pipeline (after an early stop), compiled once per directory."""
    from kfp import compiler

    from fedpipe.pipelines import federated_training

    output = directory / "register.yaml"
    if not output.exists():
        directory.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(federated_training.build_registration(config), str(output))
        _set_image(output, image)
    return output


def compile_training(
    config: RunConfig,
    directory: Path,
    image: str | None = None,
    target: str = "local",
    cluster: ClusterSettings | None = None,
) -> list[Path]:
    """Every pipeline a chain of segments of this config can run: the first segment, the
    continued ones (full and the shorter last), and the early-stop registration."""
    from fedpipe.ops import segments

    per_segment = segments.rounds_per_segment(config)
    shapes = {(per_segment, False, per_segment == config.training.rounds)}
    first = per_segment + 1
    while first <= config.training.rounds:
        rounds = min(per_segment, config.training.rounds - first + 1)
        shapes.add((rounds, True, first + rounds - 1 == config.training.rounds))
        first += rounds
    paths = [
        compile_segment(
            config,
            directory,
            r,
            continuation=c,
            register_model=g,
            image=image,
            target=target,
            cluster=cluster,
        )
        for r, c, g in sorted(shapes, key=lambda shape: (shape[1], -shape[0], shape[2]))
    ]
    return [*paths, compile_registration(config, directory, image)]


# What a default KFP backend accepts. Argo keeps a Workflow object, spec and status, in one
# etcd object: Argo's default limit is 1 MiB (JSON, status included; over it Argo first
# gzips the node status into status.compressedNodes, then fails the run unless node status
# offload to a database is configured), and etcd refuses objects over 1.5 MiB.
ARGO_DEFAULT_LIMIT = 1024 * 1024
ETCD_LIMIT = 1536 * 1024


@dataclasses.dataclass(frozen=True)
class WorkflowEstimate:
    """The Argo Workflow a KFP backend makes of a compiled pipeline (fedpipe.ops.argo_workflow):
    the spec part as the backend compiler lays it out, measured; the status part an
    estimate of every node's entry once the run has finished."""

    compiled_bytes: int  # the IR YAML
    spec_bytes: int  # the Workflow object as created (JSON)
    templates: int
    nodes: int
    status_bytes: int  # status.nodes as JSON
    compressed_status_bytes: int  # the same, gzipped and base64-encoded by Argo

    @property
    def status_compressed(self) -> bool:
        """Whether Argo has to compress the node status to stay under its limit."""
        return self.spec_bytes + self.status_bytes > ARGO_DEFAULT_LIMIT

    @property
    def workflow_bytes(self) -> int:
        """The finished workflow as Argo stores it (node status compressed if it must be)."""
        status = self.compressed_status_bytes if self.status_compressed else self.status_bytes
        return self.spec_bytes + status

    @property
    def verdict(self) -> str:
        if self.spec_bytes > ETCD_LIMIT:
            return "refused"
        if self.workflow_bytes > ARGO_DEFAULT_LIMIT:
            return "over Argo's default limit"
        return "ok"

    def describe(self) -> str:
        status = (
            f"node status ~{self.status_bytes / 1024:.0f} KiB, compressed by Argo to "
            f"~{self.compressed_status_bytes / 1024:.0f} KiB"
            if self.status_compressed
            else f"node status ~{self.status_bytes / 1024:.0f} KiB"
        )
        return (
            f"compiled {self.compiled_bytes / 1024:.0f} KiB; Argo workflow spec "
            f"{self.spec_bytes / 1024:.0f} KiB ({self.templates} templates), {self.nodes} "
            f"workflow nodes, {status}: estimated Argo workflow "
            f"{self.workflow_bytes / 1024:.0f} KiB with status (Argo default limit "
            f"{ARGO_DEFAULT_LIMIT // 1024} KiB, etcd {ETCD_LIMIT // 1024} KiB): {self.verdict}"
        )


def estimate_workflow(path: Path, fan_out: int) -> WorkflowEstimate:
    """The Argo workflow a KFP backend makes of a compiled pipeline whose loops over
    parameters fan out `fan_out` ways (the shards of a round). Raises
    argo_workflow.UnsupportedConstruct for constructs that model does not build."""
    from fedpipe.ops import argo_workflow

    spec, *platform = yaml.safe_load_all(path.read_text())
    compiled = argo_workflow.compile_workflow(spec, platform[0] if platform else None)
    status = argo_workflow.estimate_status(compiled, spec, fan_out)
    return WorkflowEstimate(
        compiled_bytes=path.stat().st_size,
        spec_bytes=compiled.spec_bytes,
        templates=len(compiled.templates),
        nodes=status.nodes,
        status_bytes=status.raw_bytes,
        compressed_status_bytes=status.compressed_bytes,
    )


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
