"""The numpy forward pass scores the dense models as Keras does."""

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
