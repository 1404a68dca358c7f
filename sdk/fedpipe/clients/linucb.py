"""LinUCB (Li et al., WWW 2010): a contextual bandit with one linear reward model shared by
all clients, whose context is the client's history (fedpipe.clients.history.context).

Its state (A = I + sum x x^T, b = sum r x) lives in the client registry, so a resumed
pipeline continues learning where it stopped. It learns every round whatever policy
selects, so switching to the `linucb` policy mid-run starts from what was seen so far.
"""

from __future__ import annotations

import numpy as np

from fedpipe.artifacts.client_registry import ClientRegistry

STATE_KEY = "linucb"


def _state(registry: ClientRegistry, dims: int) -> tuple[np.ndarray, np.ndarray]:
    raw = registry.policy_state.get(STATE_KEY)
    if raw is None:
        return np.eye(dims), np.zeros(dims)
    return np.asarray(raw["A"], dtype=np.float64), np.asarray(raw["b"], dtype=np.float64)


def scores(registry: ClientRegistry, contexts: np.ndarray, alpha: float) -> np.ndarray:
    """Upper confidence bounds theta.x + alpha * sqrt(x A^-1 x), one per row of contexts."""
    a, b = _state(registry, contexts.shape[1])
    a_inv = np.linalg.inv(a)
    theta = a_inv @ b
    width = np.sqrt(np.einsum("ij,jk,ik->i", contexts, a_inv, contexts))
    return contexts @ theta + alpha * width


def learn(
    registry: ClientRegistry, contexts: dict[int, np.ndarray], rewards: dict[int, float]
) -> None:
    """One ridge-regression update per client with the reward credited to it."""
    if not contexts:
        return
    dims = len(next(iter(contexts.values())))
    a, b = _state(registry, dims)
    for client_id in sorted(contexts):
        x = contexts[client_id]
        a += np.outer(x, x)
        b += rewards[client_id] * x
    registry.policy_state[STATE_KEY] = {"A": a.tolist(), "b": b.tolist()}
