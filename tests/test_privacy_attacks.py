"""The privacy attacks work where they must: on tiny inputs, a plain single-example update
gives its image and label away, and an overfit model gives its members away."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedpipe import config
from fedpipe.experiments import privacy_attacks
from fedpipe.privacy import accounting, inversion, membership
from fedpipe.training import trainer


@pytest.fixture(scope="module")
def digits_trainer() -> trainer.Trainer:
    return trainer.Trainer(
        config.from_mapping(
            {"data.dataset": "digits", "model.name": "mlp", "model.hidden_units": 32}
        )
    )


def _observe(model_trainer: trainer.Trainer, x: np.ndarray, y: np.ndarray, batch: int):
    start = model_trainer.initial_weights()
    result = model_trainer.train(
        start, x, y, epochs=1, batch_size=batch, learning_rate=0.1, mu=0.0, seed=[0]
    )
    return inversion.Observed(
        delta=model_trainer.spec.split(result.delta),
        weights=model_trainer.spec.split(start),
        num_examples=len(y),
        batch_size=batch,
        steps=-(-len(y) // batch),
        learning_rate=0.1,
    )


def test_forward_is_the_keras_model(digits_trainer: trainer.Trainer) -> None:
    import tensorflow as tf

    x = digits_trainer.data.x_heldout[:5]
    weights = [tf.constant(w) for w in digits_trainer.spec.split(digits_trainer.initial_weights())]
    probs = tf.nn.softmax(inversion.forward(weights, x)).numpy()
    digits_trainer.set_weights(digits_trainer.initial_weights())
    np.testing.assert_allclose(probs, digits_trainer.model(x).numpy(), atol=1e-5)


def test_single_example_update_gives_its_image_and_label_away(
    digits_trainer: trainer.Trainer,
) -> None:
    data = digits_trainer.data
    x, y = data.x_train[7:8], data.y_train[7:8]
    observed = _observe(digits_trainer, x, y, batch=1)
    labels = inversion.recover_labels(observed, data.num_classes)
    assert labels.tolist() == y.tolist()
    rebuilt = inversion.reconstruct(observed, labels, iterations=150, image_shape=(8, 8))
    scored = inversion.score(rebuilt, x, y, (8, 8))
    noise_psnr, noise_ssim = inversion.random_baseline(x, (8, 8))
    assert scored.label_recovery == 1.0
    assert scored.psnr > noise_psnr + 15  # dB: far above guessing
    assert scored.ssim > 0.8 > noise_ssim + 0.5


def test_batch_labels_are_counted_from_the_bias(digits_trainer: trainer.Trainer) -> None:
    data = digits_trainer.data
    x, y = data.x_train[20:28], data.y_train[20:28]
    labels = inversion.recover_labels(_observe(digits_trainer, x, y, batch=8), data.num_classes)
    assert len(labels) == 8
    overlap = np.minimum(np.bincount(labels, minlength=10), np.bincount(y, minlength=10)).sum()
    assert overlap >= 6


def test_image_metrics() -> None:
    img = np.random.default_rng(0).random(64)
    assert inversion.ssim(img, img, (8, 8)) == pytest.approx(1.0)
    assert math.isinf(inversion.psnr(img, img))
    assert inversion.psnr(np.zeros(64), np.full(64, 0.1)) == pytest.approx(20.0)
    assert inversion.ssim(1 - img, img, (8, 8)) < 0


def test_membership_inference_finds_the_members_of_an_overfit_model() -> None:
    import keras

    cfg = config.from_mapping(
        {"data.dataset": "digits", "model.name": "mlp", "model.hidden_units": 64}
    )
    model_trainer = trainer.Trainer(cfg)
    data = model_trainer.data
    members_x, members_y = data.x_train[:60], data.y_train[:60]
    outsiders_x, outsiders_y = data.x_heldout[:60], data.y_heldout[:60]
    model_trainer.set_weights(model_trainer.initial_weights())
    model = model_trainer.model
    model.compile(keras.optimizers.SGD(0.3), "sparse_categorical_crossentropy")
    model.fit(members_x, members_y, batch_size=10, epochs=80, verbose=0)
    x = np.concatenate([members_x, outsiders_x])
    y = np.concatenate([members_y, outsiders_y])
    is_member = np.arange(len(y)) < 60
    probs = model.predict(x, verbose=0)
    by_loss = membership.evaluate(membership.loss_scores(probs, y), is_member)
    assert by_loss.auc > 0.7  # 0.77 measured
    refs = privacy_attacks.reference_probabilities(
        cfg, data.x_train[200:800], data.y_train[200:800], x, count=2, epochs=10
    )
    calibrated = membership.evaluate(membership.calibrated_scores(probs, refs, y), is_member)
    assert calibrated.auc > 0.65  # 0.74 measured


def test_attack_metrics_on_known_scores() -> None:
    is_member = np.array([True] * 100 + [False] * 100)
    perfect = membership.evaluate(is_member.astype(float), is_member)
    assert perfect.auc == 1.0 and perfect.tpr_at_fpr == 1.0
    chance = membership.evaluate(np.random.default_rng(0).random(200), is_member)
    assert abs(chance.auc - 0.5) < 0.12


def test_noise_for_epsilon_meets_the_target() -> None:
    cfg = config.from_mapping(
        {
            "data.num_clients": 100,
            "selection.cohort_size": 10,
            "training.rounds": 20,
            "aggregation.dp.clip_norm": 0.5,
            "aggregation.dp.delta": 1e-3,
        }
    )
    z = privacy_attacks.noise_for_epsilon(cfg, 3.0)
    assert accounting.epsilon(cfg.replace({"aggregation.dp.noise_multiplier": z}), 20) <= 3.0
    assert accounting.epsilon(cfg.replace({"aggregation.dp.noise_multiplier": z - 0.01}), 20) > 3.0
