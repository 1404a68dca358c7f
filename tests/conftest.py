import datetime
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fedpipe import config

# shared/ lies beside the repo; FEDPIPE_MNIST_DIR points elsewhere (e.g. from a worktree).
MNIST_DIR = Path(
    os.environ.get("FEDPIPE_MNIST_DIR")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with kfp.local pipeline tests run first, each file's tests in their order:
    under `make test`'s two xdist workers (one file per worker at a time), the long files
    start early and the many short ones fill the gaps at the end."""
    slow = {item.path for item in items if item.get_closest_marker("pipeline")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def small_config(mlflow_uri: str) -> config.RunConfig:
    """Digits, 6 clients in 2 shards of 3, a few quick rounds."""
    return config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 6,
            "selection.clients_per_shard": 3,
            "training.rounds": 3,
            "training.local_epochs": 2,
            "tracking.uri": mlflow_uri,
            "tracking.registered_model_name": "fedpipe-test",
        }
    )


@pytest.fixture(scope="session")
def agents_config() -> Callable[..., config.RunConfig]:
    """A factory: agents_config(mlflow_uri, changes) is the agent tests' run, 5 clients
    in shards of 3 (two per round), SecAgg+, 3 rounds of 2 local epochs, with changes."""

    def make(mlflow_uri: str, changes: dict | None = None) -> config.RunConfig:
        return config.from_mapping(
            {
                "data.num_clients": 5,
                "selection.cohort_size": 5,
                "selection.clients_per_shard": 3,
                "training.rounds": 3,
                "training.local_epochs": 2,
                "aggregation.secure.mode": "secagg+",
                "tracking.uri": mlflow_uri,
                "tracking.registered_model_name": "fedpipe-agents-test",
                **(changes or {}),
            }
        )

    return make


@pytest.fixture
def expired_certificate(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """A factory: issue(tls, client_id, signing_identity=False) writes a client certificate
    of the federation CA in `tls` (fedpipe.agents.provisioning.provision) that expired a
    day ago, and its key; returns their paths."""
    from fedpipe.agents import provisioning

    def issue(tls, client_id: int, *, signing_identity: bool = False) -> tuple[Path, Path]:
        authority = provisioning.Authority.load(tls.ca_cert, tls.ca_key)
        now = datetime.datetime.now(datetime.UTC)
        cert, key = provisioning.issue(
            authority,
            provisioning.client_cn(client_id),
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
            signing_identity=signing_identity,
        )
        paths = tmp_path / "expired.pem", tmp_path / "expired.key"
        provisioning.write_certificate(paths[0], cert)
        provisioning.write_key(paths[1], key)
        return paths

    return issue


# Real servers on 127.0.0.1, started once per session by the tests that use them (see
# tests/servers.py); each is stopped when the session ends.


@pytest.fixture(scope="session")
def server_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def s3(server_dir: Path):
    """An S3-compatible server; its endpoint and credentials are in the environment of the
    test process and of every process it starts (kfp.local tasks among them)."""
    from tests import servers

    with servers.s3_server(server_dir) as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env().items():
            mp.setenv(key, value)
        yield server


@pytest.fixture(scope="session")
def postgres():
    from tests import servers

    with servers.postgres() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_db(postgres) -> str:
    """The MLflow server's PostgreSQL database, as a SQLAlchemy URL (holds the password)."""
    return postgres.create_database("mlflow")


@pytest.fixture(scope="session")
def mlflow_server(server_dir: Path, mlflow_db: str, s3) -> str:
    """An MLflow tracking server on PostgreSQL, its artifacts proxied to the S3 bucket
    `mlflow`; yields the tracking URI."""
    from tests import servers

    s3.client().create_bucket(Bucket="mlflow")
    with servers.mlflow_server(server_dir, mlflow_db, "s3://mlflow/artifacts", s3.env()) as uri:
        yield uri
