"""Object storage by URI against real servers on loopback (S3: moto's server, GCS: the
gcp-storage-emulator), datasets read from them, and the tracking URI's password kept out
of MLflow."""

import hashlib

import numpy as np
import pytest

from fedpipe import config
from fedpipe.data import datasets, storage
from fedpipe.ops import tracking
from tests.conftest import MNIST_DIR


@pytest.fixture(scope="module")
def bucket(s3) -> str:
    s3.client().create_bucket(Bucket="data")
    return "data"


def test_parse_splits_schemes_and_refuses_unknown_ones():
    assert storage.parse("s3://b/k/x.gz") == storage.Location("s3", "b", "k/x.gz")
    assert storage.parse("gs://b/") == storage.Location("gs", "b", "")
    assert storage.parse("file:///tmp/a%20b") == storage.Location("file", "", "/tmp/a b")
    assert storage.parse("rel/dir") == storage.Location("file", "", "rel/dir")
    assert storage.parse("s3://b/p").child("f").uri() == "s3://b/p/f"
    for bad in ("s3:///key", "ftp://host/x", "file://otherhost/x"):
        with pytest.raises(storage.StorageError):
            storage.parse(bad)


def test_s3_write_read_list_open(bucket):
    storage.write_bytes(f"s3://{bucket}/t/a.bin", b"abc")
    with storage.open_uri(f"s3://{bucket}/t/b.bin", "wb") as f:
        f.write(b"hello")
    with storage.open_uri(f"s3://{bucket}/t/b.bin") as f:
        assert f.read() == b"hello"
    storage.write_bytes(f"s3://{bucket}/t/sub/c.bin", b"x")  # not directly under t/
    assert storage.list_objects(f"s3://{bucket}/t") == {"a.bin": 3, "b.bin": 5}
    with pytest.raises(storage.StorageError, match="NoSuchKey"):
        storage.read_bytes(f"s3://{bucket}/t/missing")


def test_local_folder_downloads_once_and_checks_the_copy(bucket, tmp_path):
    uri = f"s3://{bucket}/mnist-check"
    written = storage.upload_folder(MNIST_DIR, uri)
    assert len(written) == 2
    cache = tmp_path / "cache"
    folder = storage.local_folder(uri, cache)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (folder / name).read_bytes() == (MNIST_DIR / name).read_bytes()
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    first_mtime = labels.stat().st_mtime_ns
    assert storage.local_folder(uri, cache) == folder
    assert labels.stat().st_mtime_ns == first_mtime  # reused, not downloaded again
    labels.write_bytes(b"\0" * labels.stat().st_size)  # same size, corrupted bytes
    storage.local_folder(uri, cache)
    assert labels.read_bytes() == (MNIST_DIR / labels.name).read_bytes()
    storage.write_bytes(f"{uri}/extra.txt", b"new")  # the remote folder changed
    assert (storage.local_folder(uri, cache) / "extra.txt").read_bytes() == b"new"
    with pytest.raises(storage.StorageError, match="no objects"):
        storage.local_folder(f"s3://{bucket}/nothing-here", cache)


def test_mnist_from_s3_equals_mnist_from_disk(bucket, tmp_path, monkeypatch):
    uri = f"s3://{bucket}/mnist"
    storage.upload_folder(MNIST_DIR, uri)
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    remote = datasets.load(config.from_mapping({"data.dataset": "mnist", "data.data_dir": uri}))
    local = datasets.load(
        config.from_mapping({"data.dataset": "mnist", "data.data_dir": f"file://{MNIST_DIR}"})
    )
    assert len(remote.x_train) + len(remote.x_heldout) == 10_000
    assert np.array_equal(remote.x_train, local.x_train)
    assert remote.heldout_digest == local.heldout_digest
    # a relative local data_dir is made absolute, a URI is left alone
    base = tmp_path
    resolved = config.resolve_local_paths(config.from_mapping({"data.data_dir": uri}), base)
    assert resolved.data.data_dir == uri


def test_gcs_round_trip_through_the_emulator(server_dir, tmp_path, monkeypatch):
    from google.cloud import storage as gcs

    from tests import servers

    with servers.gcs_server(server_dir) as host:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        gcs.Client().create_bucket("fedpipe-data")
        uri = "gs://fedpipe-data/mnist"
        storage.upload_folder(MNIST_DIR, uri)
        assert storage.list_objects(uri) == {p.name: p.stat().st_size for p in MNIST_DIR.iterdir()}
        folder = storage.local_folder(uri, tmp_path / "cache")
        name = "t10k-images-idx3-ubyte.gz"
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest == hashlib.sha256((MNIST_DIR / name).read_bytes()).hexdigest()


def test_redact_uri_hides_passwords_and_secret_query_values():
    assert (
        tracking.redact_uri("postgresql+psycopg://u:p%40ss@db:5432/mlflow?sslmode=require")
        == "postgresql+psycopg://u:***@db:5432/mlflow?sslmode=require"
    )
    assert tracking.redact_uri("https://u@host/x?token=abc&a=1") == "https://u@host/x?token=***&a=1"
    assert tracking.redact_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert tracking.redact_uri("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"


def test_tracking_uri_password_is_not_logged_as_a_param(postgres, mlflow_db, mlflow_server):
    """MLflow straight on a PostgreSQL URI that holds the password (the database the
    tracking server created its tables in): the run's params show the URI redacted, and
    no param holds the password."""
    uri = mlflow_db
    cfg = config.from_mapping({"tracking.uri": uri, "tracking.experiment": "redaction"})
    run_id = tracking.start_run(cfg, "redaction", tags={})
    params = tracking.client(cfg).get_run(run_id).data.params
    assert params["tracking.uri"] == uri.replace(postgres.password, "***")
    assert not any(postgres.password in v for v in params.values())
