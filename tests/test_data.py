import gzip
import struct

import numpy as np
import pytest

from fedpipe import config
from fedpipe.config import ConfigError
from fedpipe.data import datasets, partition

from .conftest import MNIST_DIR


def test_digits_split_is_stratified_and_seeded():
    data = datasets.load(config.RunConfig())
    assert data.x_train.shape[1] == 64 and data.image_shape == (8, 8)
    assert len(data.x_train) + len(data.x_heldout) == 1797
    assert abs(len(data.x_heldout) - 0.2 * 1797) < 10
    assert set(np.unique(data.y_heldout)) == set(range(10))
    other = datasets.load(config.from_mapping({"seed": 1}))
    assert data.heldout_digest != other.heldout_digest


def test_breast_cancer_is_standardised_tabular():
    data = datasets.load(config.from_mapping({"data.dataset": "breast_cancer"}))
    assert data.num_classes == 2 and data.image_shape is None
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-4)


@pytest.mark.skipif(not MNIST_DIR.exists(), reason="shared MNIST test set not present")
def test_mnist_idx_is_read_and_split_8000_2000():
    data = datasets.load(
        config.from_mapping({"data.dataset": "mnist", "data.data_dir": str(MNIST_DIR)})
    )
    assert data.x_train.shape == (8000, 784) and data.x_heldout.shape == (2000, 784)
    assert data.x_train.max() <= 1.0 and data.num_classes == 10


def test_idx_reader_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "bad-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">HBBIII", 0, 8, 3, 2, 28, 28) + b"\0" * 10))
    with pytest.raises(ValueError, match="header says shape"):
        datasets.read_idx(path)


def test_mnist_without_files_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="data_dir"):
        datasets.load(
            config.from_mapping({"data.dataset": "mnist", "data.data_dir": str(tmp_path)})
        )


LABELS = np.repeat(np.arange(10), 100)


@pytest.mark.parametrize("name", ["iid", "dirichlet", "shards", "quantity_skew"])
def test_partitioners_cover_every_example_once_and_are_seeded(name):
    cfg = config.from_mapping(
        {"data.partitioner": name, "data.num_clients": 20, "selection.cohort_size": 5}
    )
    parts = partition.partition(LABELS, cfg)
    assert len(parts) == 20 and all(len(p) > 0 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))
    again = partition.partition(LABELS, cfg)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition.partition(LABELS, cfg.replace({"seed": 1}))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def _mean_labels_per_client(parts):
    return np.mean([len(np.unique(LABELS[p])) for p in parts])


def test_skew_follows_the_parameters():
    base = config.from_mapping({"data.num_clients": 10})
    iid = partition.partition(LABELS, base.replace({"data.partitioner": "iid"}))
    skewed = partition.partition(LABELS, base.replace({"data.dirichlet_alpha": 0.1}))
    assert _mean_labels_per_client(iid) == 10
    assert _mean_labels_per_client(skewed) < 6
    shards = partition.partition(
        LABELS, base.replace({"data.partitioner": "shards", "data.shards_per_client": 2})
    )
    assert max(len(np.unique(LABELS[p])) for p in shards) <= 2 + 1  # a shard may straddle labels
    sizes = [
        len(p)
        for p in partition.partition(LABELS, base.replace({"data.partitioner": "quantity_skew"}))
    ]
    assert max(sizes) > 3 * min(sizes)


def test_label_histograms_match_client_data(small_config):
    histograms = partition.label_histograms(small_config)
    for client_id, histogram in enumerate(histograms):
        _, y = partition.client_data(small_config, client_id)
        assert histogram == np.bincount(y, minlength=10).tolist()
