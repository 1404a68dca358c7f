"""What a pipeline task needs on a Kubernetes cluster, set with kfp-kubernetes.

Credentials reach the pods from Kubernetes secrets (env vars and a volume), never from the
config, the image or the compiled YAML: the YAML names the secrets and keys only. Every
task gets CPU/memory requests and limits (training tasks larger ones), and the shared
state volume that holds the fault-state folder. The secret and volume names match
manifests/ (see docs/cluster.md).

The pipeline calls apply_cluster_settings(task, settings) on each task it creates;
compilation.compile_pipeline(..., target="kubernetes") makes the settings active for the
compile.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from fedpipe.config import RunConfig

# Components whose tasks train (TensorFlow over a shard of clients): the large requests.
TRAINING_COMPONENTS = frozenset({"local-train"})


@dataclasses.dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Names of the cluster objects the pods use (not their contents) and pod sizes."""

    # Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for the S3 data and artifacts.
    s3_secret: str | None = "fedpipe-s3"
    # Endpoint of an S3-compatible store (MinIO, Ceph, ...); None: AWS itself.
    s3_endpoint: str | None = None
    # Secret with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (optional keys: a
    # tracking server without auth needs none).
    mlflow_secret: str | None = "fedpipe-mlflow"
    # Secret with a GCS service-account key file `key.json`, mounted as a volume.
    gcs_secret: str | None = None
    gcs_mount: str = "/var/secrets/gcs"
    # PersistentVolumeClaim (ReadWriteMany) for state shared by the tasks of a run.
    state_pvc: str | None = "fedpipe-state"
    state_mount: str = "/fedpipe/state"
    training: Resources = Resources("1", "2", "2Gi", "4Gi")
    default: Resources = Resources("250m", "1", "1Gi", "2Gi")

    @classmethod
    def load(cls, path: str | Path | None) -> ClusterSettings:
        """Defaults, overridden by a YAML mapping of the fields above (resources as
        mappings of cpu_request, cpu_limit, memory_request, memory_limit)."""
        if path is None:
            return cls()
        values: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown cluster settings {unknown} (known: {known})")
        for name in ("training", "default"):
            if name in values:
                values[name] = Resources(
                    **{**dataclasses.asdict(getattr(cls, name)), **values[name]}
                )
        return cls(**values)


_active: contextvars.ContextVar[ClusterSettings | None] = contextvars.ContextVar(
    "fedpipe_cluster_settings", default=None
)


def active() -> ClusterSettings | None:
    """The settings of the compile in progress (None: not compiling for a cluster)."""
    return _active.get()


@contextlib.contextmanager
def compiling_for(settings: ClusterSettings) -> Iterator[ClusterSettings]:
    token = _active.set(settings)
    try:
        yield settings
    finally:
        _active.reset(token)


def apply_cluster_settings(task: Any, settings: ClusterSettings | None) -> Any:
    """Mount secrets and the state volume into one pipeline task and size its pod; a
    no-op without settings (kfp.local)."""
    if settings is None:
        return task
    from kfp import kubernetes

    if settings.s3_secret:
        kubernetes.use_secret_as_env(
            task,
            settings.s3_secret,
            {
                "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
            },
        )
    if settings.s3_endpoint:
        task.set_env_variable("AWS_ENDPOINT_URL", settings.s3_endpoint)
        task.set_env_variable("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint)
    if settings.mlflow_secret:
        kubernetes.use_secret_as_env(
            task,
            settings.mlflow_secret,
            {
                "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
            },
            optional=True,
        )
    if settings.gcs_secret:
        kubernetes.use_secret_as_volume(task, settings.gcs_secret, settings.gcs_mount)
        task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{settings.gcs_mount}/key.json")
    if settings.state_pvc:
        kubernetes.mount_pvc(task, settings.state_pvc, settings.state_mount)
    name = task.component_spec.name.replace("_", "-")
    size = settings.training if name in TRAINING_COMPONENTS else settings.default
    task.set_cpu_request(size.cpu_request).set_cpu_limit(size.cpu_limit)
    task.set_memory_request(size.memory_request).set_memory_limit(size.memory_limit)
    return task


def cluster_config(config: RunConfig, settings: ClusterSettings) -> RunConfig:
    """The run config for a cluster: with injected faults, their attempt markers go to the
    shared state volume (one folder per config, so a re-run of the config shares them as
    a kfp.local re-run in one pipeline root does)."""
    from fedpipe.simulation import faults

    if not settings.state_pvc or config.simulation.faults.state_dir is not None:
        return config
    key = hashlib.sha256(config.to_json().encode()).hexdigest()[:16]
    return faults.with_state_dir(config, Path(settings.state_mount) / key)
