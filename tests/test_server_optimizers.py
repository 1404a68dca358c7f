import numpy as np
import pytest

from fedpipe.aggregation import server_optimizers
from fedpipe.config.sections import ServerOptimizerConfig

W = np.array([1.0, -1.0, 0.5], np.float32)
D = np.array([0.2, -0.4, 0.0], np.float32)


def _step(name, state=None, **fields):
    cfg = ServerOptimizerConfig(name=name, **fields)
    state = server_optimizers.initial_state(cfg, W.size) if state is None else state
    return server_optimizers.apply(cfg, W, D, state)


def test_fedavg_applies_the_mean_delta_scaled_by_the_server_rate():
    weights, state = _step("fedavg", learning_rate=0.5)
    assert np.allclose(weights, W + 0.5 * D) and state == {}


def test_fedavgm_accumulates_momentum():
    _, state = _step("fedavgm", momentum=0.9)
    weights, state2 = _step("fedavgm", state=state, momentum=0.9)
    assert np.allclose(state2["server_m"], 0.9 * D + D)
    assert np.allclose(weights, W + 1.9 * D)


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_adaptive_first_step_matches_reddi_et_al(name):
    tau, b1, b2, lr = 1e-3, 0.9, 0.99, 0.1
    weights, state = _step(name, learning_rate=lr, tau=tau, beta1=b1, beta2=b2)
    m = (1 - b1) * D
    v0, sq = tau**2, D**2
    v = b2 * v0 + (1 - b2) * sq if name == "fedadam" else v0 - (1 - b2) * sq * np.sign(v0 - sq)
    assert np.allclose(state["server_v"], v)
    assert np.allclose(weights, W + lr * m / (np.sqrt(v) + tau), atol=1e-6)
    assert weights[2] == W[2]  # a zero pseudo-gradient leaves the coordinate alone
