"""MLflow tracking: one parent run per pipeline run, written to from every stage.

Stages run in separate processes (pods on a cluster), so each one talks to the tracking
server through MlflowClient with the run id the initialize stage created.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fedpipe.config import RunConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient


_SECRET_QUERY_KEYS = ("password", "passwd", "secret", "token", "key", "credential", "signature")


def redact_uri(uri: str) -> str:
    """A tracking (or store) URI safe to log: the password of its user part and query values
    that look like credentials replaced by ***. A database or basic-auth URI often holds a
    password, and params, logs and UIs are read by more people than the secret is."""
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name, has_password, _ = user.partition(":")
        netloc = f"{name}:***@{host}" if has_password else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [
                (k, "***" if any(s in k.lower() for s in _SECRET_QUERY_KEYS) else v)
                for k, v in pairs
            ],
            safe="*",
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # unsplit would drop the empty host of sqlite:////abs/path
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def logged_params(config: RunConfig) -> dict[str, str]:
    """The config as MLflow params, with the tracking URI redacted."""
    params = {name: str(value) for name, value in sorted(config.items())}
    params["tracking.uri"] = redact_uri(config.tracking.uri)
    return params


def client(config: RunConfig) -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(config.tracking.uri)
    mlflow.set_registry_uri(config.tracking.uri)
    return MlflowClient(config.tracking.uri, config.tracking.uri)


def experiment_id(config: RunConfig) -> str:
    """The run's experiment, created on first use. With a local SQLite store the artifacts
    go beside the database file, not into whatever directory a task happens to run in."""
    mlflow_client = client(config)
    existing = mlflow_client.get_experiment_by_name(config.tracking.experiment)
    if existing is not None:
        return existing.experiment_id
    location = None
    uri = config.tracking.uri
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return mlflow_client.create_experiment(config.tracking.experiment, artifact_location=location)


def start_run(config: RunConfig, run_name: str, tags: dict[str, str]) -> str:
    """Create the parent run of a pipeline run, with the whole config as params (the
    tracking URI redacted)."""
    from mlflow.entities import Param

    mlflow_client = client(config)
    run = mlflow_client.create_run(experiment_id(config), run_name=run_name, tags=tags)
    params = [Param(k, v) for k, v in logged_params(config).items()]
    mlflow_client.log_batch(run.info.run_id, params=params)
    return run.info.run_id


def log_experiment(
    config: RunConfig,
    name: str,
    files: list[Path],
    *,
    metrics: dict[str, float] | None = None,
    params: dict[str, object] | None = None,
    artifact_dir: str | None = None,
) -> str:
    """One MLflow run per `fedpipe experiment`, tagged with its name: the base config as
    params, the experiment's table and plot files as artifacts, its headline figures as
    metrics."""
    from mlflow.entities import Metric, Param

    run_id = start_run(config, f"experiment {name}", tags={"fedpipe.experiment": name})
    mlflow_client = client(config)
    now = int(time.time() * 1000)
    mlflow_client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
    )
    for path in files:
        mlflow_client.log_artifact(run_id, str(path), artifact_dir)
    mlflow_client.set_terminated(run_id)
    return run_id
