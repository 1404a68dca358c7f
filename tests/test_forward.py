"""The numpy forward pass scores the dense models as Keras does."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fedpipe.training import forward, trainer


@pytest.mark.parametrize("model", ["mlp", "logistic_regression"])
@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
def test_numpy_forward_pass_matches_keras(small_config, model, dataset):
    cfg = small_config.replace({"model.name": model, "data.dataset": dataset})
    keras_trainer = trainer.for_config(cfg)
    data = keras_trainer.data
    # Trained-looking weights: the initial ones plus a seeded perturbation.
    rng = np.random.default_rng(7)
    weights = keras_trainer.initial_weights()
    weights = (weights + rng.normal(0, 0.3, weights.size)).astype(np.float32)

    keras_trainer.set_weights(weights)
    expected = keras_trainer.model.predict(data.x_heldout, verbose=0)
    probs = forward.predict(weights, keras_trainer.spec, data.x_heldout)
    assert probs.dtype == np.float32 and probs.shape == expected.shape
    # Equal up to float32 rounding: the matrix products sum in another order, and a
    # logit's last-bit difference scales the smallest probabilities by ~1e-5 relatively.
    np.testing.assert_allclose(probs, expected, rtol=2e-5, atol=1e-7)
    assert np.array_equal(probs.argmax(axis=1), expected.argmax(axis=1))

    ours, _ = forward.heldout_evaluation(cfg, weights, keras_trainer.spec)
    theirs = keras_trainer.evaluate(weights, data.x_heldout, data.y_heldout)
    assert ours.accuracy == pytest.approx(theirs.accuracy, abs=1e-6)
    assert ours.loss == pytest.approx(theirs.loss, abs=1e-6)
    np.testing.assert_array_equal(ours.confusion_matrix, theirs.confusion_matrix)


def test_forward_pass_refuses_a_model_that_is_not_dense(small_config):
    cnn = trainer.for_config(small_config.replace({"model.name": "cnn"}))
    with pytest.raises(ValueError, match="not a stack of Dense layers"):
        forward.predict(cnn.initial_weights(), cnn.spec, cnn.data.x_heldout)


# In a fresh process with OpenBLAS's default thread count: the CPU the process burns in
# the 0.3 s after a held-out-sized product, with nothing running. Printed: after a plain
# numpy product (the control), and after forward.predict of the MNIST 2NN.
_CPU_AFTER_PRODUCTS = """
import time
import numpy as np
from fedpipe.artifacts.wire import WeightsSpec
from fedpipe.training import forward

def cpu_after(product):
    product()
    started = time.process_time()
    time.sleep(0.3)
    return time.process_time() - started

rng = np.random.default_rng(0)
x = rng.random((2000, 784), dtype=np.float32)
kernel = rng.random((784, 200), dtype=np.float32)
names = [f"dense{i}/{kind}" for i in range(3) for kind in ("kernel", "bias")]
shapes = [(784, 200), (200,), (200, 200), (200,), (200, 10), (10,)]
spec = WeightsSpec(tuple(names), tuple(shapes))
weights = rng.normal(0, 0.05, spec.size).astype(np.float32)
print(cpu_after(lambda: x @ kernel), cpu_after(lambda: forward.predict(weights, spec, x)))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="OpenBLAS runs one thread here")
def test_scoring_leaves_no_blas_worker_spinning():
    """OpenBLAS's woken workers spin after a call; the scoring pass keeps them asleep, so
    in a simulation they take no core from the next round's training."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    }
    out = subprocess.run(
        [sys.executable, "-c", _CPU_AFTER_PRODUCTS],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    plain, scoring = (float(v) for v in out.split())
    if plain < 0.03:
        pytest.skip(f"OpenBLAS's workers did not spin after a plain product here ({plain:.3f} s)")
    assert scoring < 0.02, (
        f"{scoring:.3f} s of CPU burnt after scoring (plain product: {plain:.3f} s)"
    )
