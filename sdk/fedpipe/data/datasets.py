"""The datasets a federation trains on, split into a training pool and a held-out set.

The training pool is what the partitioner spreads over clients; the held-out set stays on
the server side for evaluation and for comparing a new model with the registry champion.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from fedpipe.config import ConfigError, RunConfig
from fedpipe.data import storage


@dataclasses.dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_heldout: np.ndarray
    y_heldout: np.ndarray
    num_classes: int
    image_shape: tuple[int, int] | None  # (height, width) when the features are an image

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def heldout_digest(self) -> str:
        """Identifies the held-out set, so promotion compares models on the same data."""
        h = hashlib.sha256(self.x_heldout.tobytes())
        h.update(self.y_heldout.tobytes())
        return h.hexdigest()[:16]


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): the format MNIST is distributed in."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (header {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values")
    return data.reshape(shape)


def _load_mnist(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from a folder of IDX files: a local path, or an s3:// / gs:// / file:// URI
    (a remote folder is copied to the local cache once and checked)."""
    root = storage.local_folder(data_dir)
    image_files = sorted(root.glob("*-images-idx3-ubyte*"))
    if not image_files:
        raise ConfigError(
            "data.data_dir", data_dir, "a directory with *-images-idx3-ubyte[.gz] files"
        )
    xs, ys = [], []
    for images in image_files:
        labels = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
        if not labels.exists():
            raise ConfigError("data.data_dir", data_dir, f"a labels file beside {images.name}")
        x, y = read_idx(images), read_idx(labels)
        if len(x) != len(y):
            raise ValueError(f"{images.name} has {len(x)} images but {labels.name} {len(y)}")
        xs.append(x.reshape(len(x), -1).astype(np.float32) / 255.0)
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _stratified_split(
    y: np.ndarray, heldout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0xDA7A])
    train, heldout = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(len(idx) * heldout_fraction))
        heldout.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(heldout))


@functools.lru_cache(maxsize=4)
def _load(dataset: str, data_dir: str | None, heldout_fraction: float, seed: int) -> Dataset:
    from sklearn import datasets as skdata

    image_shape: tuple[int, int] | None = None
    if dataset == "digits":
        bunch = skdata.load_digits()
        x, y, image_shape = bunch.data.astype(np.float32) / 16.0, bunch.target, (8, 8)
    elif dataset == "breast_cancer":
        bunch = skdata.load_breast_cancer()
        x, y = bunch.data.astype(np.float32), bunch.target
    elif dataset == "mnist":
        assert data_dir is not None  # RunConfig guarantees it
        x, y = _load_mnist(data_dir)
        image_shape = (28, 28)
    else:
        raise ConfigError("data.dataset", dataset, "digits, breast_cancer or mnist")
    y = y.astype(np.int64)
    train, heldout = _stratified_split(y, heldout_fraction, seed)
    if image_shape is None:  # tabular: standardise with statistics of the training pool only
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
        x = ((x - mean) / std).astype(np.float32)
    return Dataset(
        x_train=x[train],
        y_train=y[train],
        x_heldout=x[heldout],
        y_heldout=y[heldout],
        num_classes=int(y.max()) + 1,
        image_shape=image_shape,
    )


def load(config: RunConfig) -> Dataset:
    """The dataset of a run (cached per process: every shard task and round reuses it)."""
    return _load(
        config.data.dataset, config.data.data_dir, config.data.heldout_fraction, config.seed
    )
