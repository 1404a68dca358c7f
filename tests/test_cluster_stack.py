"""The cluster stack on loopback: the pipeline through kfp.local reads MNIST from an S3
URI and logs to an MLflow tracking server backed by PostgreSQL whose artifacts live in
the S3 store, then registers and promotes the model there."""

import json

import pytest

from fedpipe import config
from fedpipe.data import storage
from fedpipe.ops import local_run
from tests.conftest import MNIST_DIR

pytestmark = pytest.mark.pipeline

MODEL_NAME = "fedpipe-cluster-stack"


@pytest.fixture(scope="module")
def stack_run(s3, mlflow_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    s3.client().create_bucket(Bucket="datasets")
    data_uri = "s3://datasets/mnist"
    storage.upload_folder(MNIST_DIR, data_uri)
    cfg = config.from_mapping(
        {
            "data.dataset": "mnist",
            "data.data_dir": data_uri,
            "data.num_clients": 4,
            "selection.cohort_size": 4,
            "selection.clients_per_shard": 4,
            "training.rounds": 1,
            "training.local_epochs": 1,
            "training.batch_size": 32,
            "tracking.uri": mlflow_server,
            "tracking.experiment": "cluster-stack",
            "tracking.registered_model_name": MODEL_NAME,
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(storage.CACHE_ENV, str(root / "cache"))  # inherited by the task processes
        # Cold tasks, as the cluster's pods: each imports MLflow and reaches the server itself.
        run = local_run.run_pipeline(cfg, root / "pipeline_root", cold_tasks=True)
    return cfg, run, root


def test_pipeline_reads_s3_data_logs_to_the_server_and_promotes(stack_run, s3):
    from mlflow import MlflowClient

    cfg, run, root = stack_run
    # The tasks read the data through the S3 URI: their cache holds the checked copy.
    (manifest,) = (root / "cache").glob("*/.fedpipe-download.json")
    assert json.loads(manifest.read_text())["uri"] == "s3://datasets/mnist"

    client = MlflowClient(cfg.tracking.uri, cfg.tracking.uri)
    experiment = client.get_experiment_by_name("cluster-stack")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    accuracy = client.get_metric_history(mlflow_run.info.run_id, "accuracy")
    assert [m.step for m in accuracy] == [0, 1]
    assert accuracy[-1].value > accuracy[0].value + 0.3
    assert mlflow_run.data.params["data.data_dir"] == "s3://datasets/mnist"

    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == "1" and champion.run_id == mlflow_run.info.run_id
    assert "promoted to `@champion`" in run.registration

    # Artifacts went through the server into the S3 bucket, the model among them.
    keys = [
        item["Key"]
        for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket="mlflow")
        for item in page.get("Contents", [])
    ]
    assert any(k.endswith("clients/label_histograms.json") for k in keys)
    assert any(k.endswith("/MLmodel") for k in keys)
