"""Partitioners: how the training pool is spread over simulated clients.

Each returns one index array per client into the training pool. All are seeded and
every client gets at least one example, so no client is an empty shell.
"""

from __future__ import annotations

import functools

import numpy as np

from fedpipe.config import ConfigError, RunConfig
from fedpipe.data import datasets


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Uniform random split into near-equal parts."""
    return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), num_clients)]


def dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label-Dirichlet split (Hsu et al. 2019): each class is spread over the clients in
    proportions drawn from Dir(alpha); small alpha means few classes per client."""
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(idx)).astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].extend(chunk.tolist())
    return _fill_empty([np.sort(np.asarray(p, dtype=np.int64)) for p in parts], rng)


def shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Pathological non-IID split (McMahan et al. 2017): sort by label, cut into
    num_clients * shards_per_client shards, give each client shards_per_client of them."""
    total = num_clients * shards_per_client
    if total > len(labels):
        raise ConfigError(
            "shards_per_client",
            shards_per_client,
            f"num_clients * shards_per_client <= training examples ({len(labels)})",
        )
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, total)
    assignment = rng.permutation(total).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in assignment]


def quantity_skew(
    labels: np.ndarray, num_clients: int, sigma: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """IID labels but log-normal client sizes (sigma = 0 gives equal sizes)."""
    weights = rng.lognormal(mean=0.0, sigma=sigma, size=num_clients)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * len(labels)).astype(int))
    sizes[np.argmax(sizes)] -= sizes.sum() - len(labels)
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p) for p in np.split(rng.permutation(len(labels)), cuts)]


def _fill_empty(parts: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Give each empty client one example taken from the largest client."""
    for client, part in enumerate(parts):
        if len(part) == 0:
            donor = int(np.argmax([len(p) for p in parts]))
            take = int(rng.integers(len(parts[donor])))
            parts[client] = parts[donor][take : take + 1]
            parts[donor] = np.delete(parts[donor], take)
    return parts


def partition(labels: np.ndarray, config: RunConfig) -> list[np.ndarray]:
    """Split a training pool as the config says; deterministic in the run seed."""
    if config.data.num_clients > len(labels):
        raise ConfigError(
            "num_clients", config.data.num_clients, f"at most the training examples ({len(labels)})"
        )
    rng = np.random.default_rng([config.seed, 0x9A27])
    if config.data.partitioner == "iid":
        return iid(labels, config.data.num_clients, rng)
    if config.data.partitioner == "dirichlet":
        return dirichlet(labels, config.data.num_clients, config.data.dirichlet_alpha, rng)
    if config.data.partitioner == "shards":
        return shards(labels, config.data.num_clients, config.data.shards_per_client, rng)
    return quantity_skew(labels, config.data.num_clients, config.data.quantity_skew_sigma, rng)


@functools.lru_cache(maxsize=4)
def client_indices(config: RunConfig) -> tuple[np.ndarray, ...]:
    """Each client's indices into the run's training pool (cached per process)."""
    return tuple(partition(datasets.load(config).y_train, config))


def client_data(config: RunConfig, client_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The private data of one client: only that client's task ever loads it."""
    data = datasets.load(config)
    idx = client_indices(config)[client_id]
    return data.x_train[idx], data.y_train[idx]


def label_histograms(config: RunConfig) -> list[list[int]]:
    """Per-client label counts, recorded in the client registry at the start of a run."""
    data = datasets.load(config)
    return [
        np.bincount(data.y_train[idx], minlength=data.num_classes).tolist()
        for idx in client_indices(config)
    ]
