"""An agent's own data: a directory holding `data.npz` (arrays x, y) or MNIST-style IDX
files, or the same files under an object-store prefix (s3://bucket/prefix,
gs://bucket/prefix). Those are read through fedpipe.data.storage with the agent's own
credentials (its environment: boto3's chain and AWS_ENDPOINT_URL for S3,
GOOGLE_APPLICATION_CREDENTIALS or STORAGE_EMULATOR_HOST for GCS) into a cache in the
agent's private state folder, checked against the remote listing and the digests taken
at download each time the agent loads it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from fedpipe.data import datasets, storage

DATA_FILE = "data.npz"


CACHE_DIR = "data-cache"


def load(uri: str, state_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one data owner: x float32 (examples, features), y int64 labels. A remote
    URI is copied to state_dir/data-cache (default: the user's fedpipe cache)."""
    scheme = urlparse(uri).scheme
    if scheme in ("s3", "gs"):  # the agent's own credentials, from its environment
        cache = None
        if state_dir is not None:
            cache = Path(state_dir) / CACHE_DIR
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            cache.chmod(0o700)
        return load(str(storage.local_folder(uri, cache)))
    root = Path(uri[len("file://") :] if scheme == "file" else uri)
    if (root / DATA_FILE).exists():
        with np.load(root / DATA_FILE, allow_pickle=False) as bundle:
            x, y = bundle["x"], bundle["y"]
    else:
        images = sorted(root.glob("*-images-idx3-ubyte*"))
        labels = sorted(root.glob("*-labels-idx1-ubyte*"))
        if not images or len(images) != len(labels):
            raise FileNotFoundError(
                f"{root}: no {DATA_FILE} and no matching *-images-idx3-ubyte / "
                "*-labels-idx1-ubyte files"
            )
        x = np.concatenate([datasets.read_idx(p) for p in images])
        y = np.concatenate([datasets.read_idx(p) for p in labels])
        x = x.reshape(len(x), -1) / np.float32(255.0)
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"{uri}: {len(x)} examples but {len(y)} labels")
    return np.asarray(x, np.float32).reshape(len(x), -1), np.asarray(y, np.int64)


def write(root: str | Path, x: np.ndarray, y: np.ndarray) -> Path:
    """One data owner's folder (created 0700: only its owner reads it)."""
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    np.savez(folder / DATA_FILE, x=np.asarray(x, np.float32), y=np.asarray(y, np.int64))
    return folder


def prepare(config, out: str | Path) -> list[Path]:
    """Write each client's partition of the config's dataset to out/client-<i>/, as demo
    and test data owners: after this the pipeline never needs to read them."""
    from fedpipe.data import partition

    return [
        write(Path(out) / f"client-{i}", *partition.client_data(config, i))
        for i in range(config.data.num_clients)
    ]
