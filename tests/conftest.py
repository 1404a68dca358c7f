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
