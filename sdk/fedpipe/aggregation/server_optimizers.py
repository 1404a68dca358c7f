"""Server optimizers: how the averaged client update moves the global model.

Reddi et al. 2021, "Adaptive Federated Optimization": the averaged client delta is a
pseudo-gradient; FedAvg applies it as is, FedAvgM with momentum, FedAdam and FedYogi with
adaptive per-coordinate steps. The optimizer's state travels inside the Model artifact.
"""

from __future__ import annotations

import numpy as np

from fedpipe.aggregation.layer import ServerStep, State
from fedpipe.config.sections import ServerOptimizerConfig


def initial_state(config: ServerOptimizerConfig, size: int) -> State:
    if config.name == "fedavgm":
        return {"server_m": np.zeros(size, np.float32)}
    if config.name in ("fedadam", "fedyogi"):
        return {
            "server_m": np.zeros(size, np.float32),
            # v starts at tau^2 (Reddi et al., Algorithm 2), so early steps are bounded.
            "server_v": np.full(size, config.tau**2, np.float32),
        }
    return {}


def apply(
    config: ServerOptimizerConfig, weights: np.ndarray, delta: np.ndarray, state: State
) -> tuple[np.ndarray, State]:
    """One server step: new global weights and new optimizer state."""
    lr = np.float32(config.learning_rate)
    name = config.name
    if name == "fedavg":
        return (weights + lr * delta).astype(np.float32), {}
    if name == "fedavgm":
        m = np.float32(config.momentum) * state["server_m"] + delta
        return (weights + lr * m).astype(np.float32), {"server_m": m.astype(np.float32)}
    b1, b2 = np.float32(config.beta1), np.float32(config.beta2)
    m = b1 * state["server_m"] + (1 - b1) * delta
    v, sq = state["server_v"], np.square(delta)
    v = b2 * v + (1 - b2) * sq if name == "fedadam" else v - (1 - b2) * sq * np.sign(v - sq)
    step = lr * m / (np.sqrt(v) + np.float32(config.tau))
    new_state = {"server_m": m.astype(np.float32), "server_v": v.astype(np.float32)}
    return (weights + step).astype(np.float32), new_state


class ServerOptimizer(ServerStep):
    """The server optimizer as the chain's last step; its state lives in the model artifact."""

    def __init__(self, config: ServerOptimizerConfig) -> None:
        self.config, self.name = config, config.name

    def initial_state(self, size: int) -> State:
        return initial_state(self.config, size)

    def apply(
        self, weights: np.ndarray, delta: np.ndarray, state: State
    ) -> tuple[np.ndarray, State]:
        return apply(self.config, weights, delta, state)
