from pathlib import Path

import pytest

from fedpipe import config

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def small_config(mlflow_uri: str) -> config.RunConfig:
    """Digits, 6 clients in 2 shards of 3, a few quick rounds."""
    return config.RunConfig(
        num_clients=6,
        cohort_size=6,
        clients_per_shard=3,
        rounds=3,
        local_epochs=2,
        mlflow_tracking_uri=mlflow_uri,
        registered_model_name="fedpipe-test",
    )
