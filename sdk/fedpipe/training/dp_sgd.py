"""Sample-level DP-SGD for local training (Abadi et al., CCS 2016).

For silos that must protect each record even from the aggregate of their own update:
every minibatch step clips each example's gradient to L2 norm C, sums the clipped
gradients, adds Gaussian noise of standard deviation z x C and divides by the batch size.
Per-example gradients come from one vectorised Jacobian of the per-example losses
(pfor), not from a Python loop over examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def build_train_epoch(
    model: Any,
    variables: list[Any],
    anchors: list[Any],
    clip_norm: float,
    noise_multiplier: float,
    num_features: int,
) -> Callable[..., Any]:
    """A compiled epoch of DP-SGD with the same inputs as the plain epoch plus a seed
    (two int64), from which every step's noise is derived statelessly."""
    import keras
    import tensorflow as tf

    per_example_loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    clip = tf.constant(clip_norm, tf.float32)
    stddev = tf.constant(noise_multiplier * clip_norm, tf.float32)

    def dp_step(x, y, learning_rate, mu, seed):
        with tf.GradientTape() as tape:
            losses = per_example_loss(y, model(x, training=True))
        jacobians = tape.jacobian(losses, variables)  # each [batch, *variable shape]
        batch = tf.shape(x)[0]
        squared = [tf.reduce_sum(tf.reshape(tf.square(j), [batch, -1]), axis=1) for j in jacobians]
        norms = tf.sqrt(tf.add_n(squared))
        factors = tf.minimum(1.0, clip / tf.maximum(norms, 1e-12))
        for i, (v, a, j) in enumerate(zip(variables, anchors, jacobians, strict=True)):
            clipped_sum = tf.tensordot(factors, j, axes=1)
            noise = tf.random.stateless_normal(
                tf.shape(v), seed=tf.random.experimental.stateless_fold_in(seed, i), stddev=stddev
            )
            # FedProx's pull to the global weights touches no data: it is not privatised.
            grad = (clipped_sum + noise) / tf.cast(batch, tf.float32) + mu * (v - a)
            v.assign_sub(learning_rate * grad)
        return tf.reduce_mean(losses)

    scalar = tf.TensorSpec([], tf.float32)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, num_features], tf.float32),
            tf.TensorSpec([None], tf.int64),
            scalar,
            scalar,
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([2], tf.int64),
        ]
    )
    def train_epoch(x, y, learning_rate, mu, batch_size, seed):
        n = tf.shape(x)[0]
        total = tf.constant(0.0)
        for start in tf.range(0, n, batch_size):
            end = tf.minimum(start + batch_size, n)
            step_seed = tf.random.experimental.stateless_fold_in(seed, start)
            loss = dp_step(x[start:end], y[start:end], learning_rate, mu, step_seed)
            total += loss * tf.cast(end - start, tf.float32)
        return total / tf.cast(n, tf.float32)

    return train_epoch
