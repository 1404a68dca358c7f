"""Sample-level DP-SGD in local training: per-example clipping and noise."""

import math

import numpy as np
import pytest

from fedpipe import config
from fedpipe.data import partition
from fedpipe.training import trainer


@pytest.fixture(scope="module")
def client_data():
    cfg = config.from_mapping({"data.num_clients": 6, "selection.cohort_size": 6})
    return partition.client_data(cfg, 0)


def _one_full_batch_step(cfg: config.RunConfig, x, y) -> np.ndarray:
    """The update of a single SGD step on the whole batch at learning rate 1: minus the
    (privatised) mean gradient."""
    model_trainer = trainer.for_config(cfg)
    return model_trainer.train(
        model_trainer.initial_weights(),
        x,
        y,
        epochs=1,
        batch_size=len(x),
        learning_rate=1.0,
        mu=0.0,
        seed=[cfg.seed, 1, 0],
    ).delta.astype(np.float64)


def _clipped_mean_gradient(cfg: config.RunConfig, x, y, clip_norm: float) -> np.ndarray:
    """Reference: per-example gradients one example at a time, clipped, averaged."""
    import keras
    import tensorflow as tf

    from fedpipe.artifacts import wire

    model_trainer = trainer.for_config(cfg)
    model_trainer.set_weights(model_trainer.initial_weights())
    model = model_trainer.model
    loss = keras.losses.SparseCategoricalCrossentropy()
    total = None
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            value = loss(y[i : i + 1], model(x[i : i + 1], training=True))
        grads = tape.gradient(value, model.trainable_weights)
        flat = wire.flatten([g.numpy() for g in grads]).astype(np.float64)
        flat *= min(1.0, clip_norm / np.linalg.norm(flat))
        total = flat if total is None else total + flat
    return total / len(x)


def test_dp_sgd_step_is_the_mean_of_per_example_clipped_gradients(client_data):
    x, y = client_data
    clip = 0.05
    cfg = config.from_mapping(
        {"data.num_clients": 6, "selection.cohort_size": 6, "training.dp_sgd_clip_norm": clip}
    )
    update = _one_full_batch_step(cfg, x, y)
    reference = _clipped_mean_gradient(cfg, x, y, clip)
    np.testing.assert_allclose(update, -reference, atol=2e-6)
    assert np.linalg.norm(update) <= clip + 1e-6
    # A clip norm no gradient reaches and no noise: the plain SGD step.
    loose = config.from_mapping(
        {"data.num_clients": 6, "selection.cohort_size": 6, "training.dp_sgd_clip_norm": 1e6}
    )
    plain = config.from_mapping({"data.num_clients": 6, "selection.cohort_size": 6})
    np.testing.assert_allclose(
        _one_full_batch_step(loose, x, y), _one_full_batch_step(plain, x, y), atol=2e-6
    )


def test_dp_sgd_noise_has_standard_deviation_z_c_over_batch(client_data):
    x, y = client_data
    clip, z = 0.05, 2.0
    quiet = config.from_mapping(
        {"data.num_clients": 6, "selection.cohort_size": 6, "training.dp_sgd_clip_norm": clip}
    )
    noisy = quiet.replace({"training.dp_sgd_noise_multiplier": z})
    noise = _one_full_batch_step(noisy, x, y) - _one_full_batch_step(quiet, x, y)
    expected = z * clip / len(x)
    assert abs(noise.std() - expected) < 5 * expected / math.sqrt(2 * noise.size)
    # The noise is secret (another draw each time), except in reproducible-simulation mode.
    assert np.abs(_one_full_batch_step(noisy, x, y) - _one_full_batch_step(noisy, x, y)).max() > 0
    seeded = noisy.replace({"privacy.mode": "reproducible-simulation"})
    np.testing.assert_array_equal(
        _one_full_batch_step(seeded, x, y), _one_full_batch_step(seeded, x, y)
    )


def test_sample_level_epsilon_is_dp_accountings_for_the_silo(small_config, tmp_path):
    import dp_accounting

    from fedpipe.artifacts.client_registry import ClientRegistry
    from fedpipe.ops import tracking
    from fedpipe.privacy import accounting as privacy_accounting
    from fedpipe.simulation.runner import simulate

    cfg = small_config.replace(
        {
            "training.rounds": 2,
            "training.local_epochs": 1,
            "training.batch_size": 16,
            "training.dp_sgd_clip_norm": 1.0,
            "training.dp_sgd_noise_multiplier": 1.0,
        }
    )
    result = simulate(cfg, tmp_path / "sim", register=False)
    registry = ClientRegistry.load(tmp_path / "sim" / "round_002" / "registry.json")
    expected = []
    for c in registry.clients:  # every client trained twice (cohort = all clients)
        steps = 2 * math.ceil(c.num_examples / 16)
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                min(1.0, 16 / c.num_examples), dp_accounting.GaussianDpEvent(1.0)
            ),
            steps,
        )
        expected.append(dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(1e-5))
        assert privacy_accounting.local_epsilon(cfg, c.num_examples, 2) == expected[-1]
    history = tracking.client(cfg).get_metric_history(result.mlflow_run_id, "local_epsilon_max")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(max(expected))
