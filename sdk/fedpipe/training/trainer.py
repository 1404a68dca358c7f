"""One compiled Keras model per process, reused for every client a task trains.

Building a model and tracing its training step is the expensive part of local training;
doing it once per process and only swapping weights per client is what makes the
simulation as fast as a hand-written FedAvg loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Iterator

import numpy as np

from fedpipe.artifacts import wire
from fedpipe.config import RunConfig
from fedpipe.data import datasets
from fedpipe.privacy import randomness
from fedpipe.training import dp_sgd, models

# Before TensorFlow loads (every stage that uses it imports this module first): keep its
# C++ chatter out of task logs, and use TF's own kernels rather than oneDNN's, which were
# slower on the small dense models here and reorder floating-point sums.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# One intra-op thread. A client's ops are small (batch 32): split across threads, they
# spent more CPU waking and waiting than computing (10 agents on 2 cores: 145 ms of CPU per
# client against 52 ms), and the split changes float sums with the core count. With one
# thread a client's update is the same bits wherever it trains (a simulation thread, a
# pod, an agent), and the cores are used by training clients side by side (the
# simulation's shard threads, the agents). Read when TensorFlow creates its runtime, at
# the first op: override it in the environment before then (empty counts as unset, as
# it does for TensorFlow).
if not os.environ.get("TF_NUM_INTRAOP_THREADS"):
    os.environ["TF_NUM_INTRAOP_THREADS"] = "1"


@dataclasses.dataclass(frozen=True)
class LocalResult:
    delta: np.ndarray  # new weights - global weights, float32
    num_examples: int
    train_loss: float  # mean loss over the last local epoch


@dataclasses.dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    confusion_matrix: np.ndarray  # rows: true label, columns: predicted


class Trainer:
    def __init__(self, config: RunConfig, data: datasets.Dataset | None = None) -> None:
        """`data`: the dataset whose shape the model takes (default: the run's dataset); a
        client agent passes its own, so it never loads the run's."""
        import keras
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        self.data = data if data is not None else datasets.load(config)
        self.model = models.build(config, self.data)
        self._initial_weights = wire.flatten(self.model.get_weights())
        self.spec = wire.WeightsSpec(
            names=tuple(v.path for v in self.model.weights),
            shapes=tuple(tuple(int(d) for d in v.shape) for v in self.model.weights),
        )
        self._loss = keras.losses.SparseCategoricalCrossentropy()
        variables = [v.value for v in self.model.trainable_weights]
        anchors = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        features = self.data.num_features
        x_spec = tf.TensorSpec([None, features], tf.float32)
        y_spec = tf.TensorSpec([None], tf.int64)
        scalar = tf.TensorSpec([], tf.float32)

        def sgd_step(x, y, learning_rate, mu):
            with tf.GradientTape() as tape:
                loss = self._loss(y, self.model(x, training=True))
                # FedProx (Li et al. 2020): keep local weights near the global ones.
                proximal = tf.add_n(
                    [
                        tf.reduce_sum(tf.square(v - a))
                        for v, a in zip(variables, anchors, strict=True)
                    ]
                )
                objective = loss + 0.5 * mu * proximal
            grads = tape.gradient(objective, variables)
            for v, g in zip(variables, grads, strict=True):
                v.assign_sub(learning_rate * g)
            return loss

        # A whole epoch is one graph call: per-batch Python calls cost more than the
        # batches themselves on models this small.
        @tf.function(input_signature=[x_spec, y_spec, scalar, scalar, tf.TensorSpec([], tf.int32)])
        def train_epoch(x, y, learning_rate, mu, batch_size):
            n = tf.shape(x)[0]
            total = tf.constant(0.0)
            for start in tf.range(0, n, batch_size):
                end = tf.minimum(start + batch_size, n)
                loss = sgd_step(x[start:end], y[start:end], learning_rate, mu)
                total += loss * tf.cast(end - start, tf.float32)
            return total / tf.cast(n, tf.float32)

        @tf.function(input_signature=[x_spec])
        def predict(x):
            return self.model(x, training=False)

        # Weights in and out as one flat vector, inside the graph: Keras' set_weights and
        # get_weights convert and assign tensor by tensor from Python, which cost more per
        # client than a small client's whole epoch (docs/performance.md).
        all_variables = [v.value for v in self.model.weights]
        sizes = [int(np.prod(shape)) for shape in self.spec.shapes]

        @tf.function(input_signature=[tf.TensorSpec([self.spec.size], tf.float32)])
        def load(vector):
            parts = tf.split(vector, sizes)
            for v, part in zip(all_variables, parts, strict=True):
                v.assign(tf.reshape(part, v.shape))
            for anchor, v in zip(anchors, variables, strict=True):
                anchor.assign(v)  # FedProx's anchor: the weights training starts from

        @tf.function(input_signature=[])
        def flat():
            return tf.concat([tf.reshape(v, [-1]) for v in all_variables], axis=0)

        self._dp_sgd = config.training.dp_sgd_clip_norm is not None
        self._noise_source = randomness.for_config(config)
        if self._dp_sgd:
            epoch = dp_sgd.build_train_epoch(
                self.model,
                variables,
                anchors,
                config.training.dp_sgd_clip_norm,
                config.training.dp_sgd_noise_multiplier,
                features,
            )
        else:

            def epoch(x, y, learning_rate, mu, batch_size, seed):
                del seed  # plain SGD draws no noise
                return train_epoch(x, y, learning_rate, mu, batch_size)

        # A client's whole local training is one graph call: load the global weights, run
        # every epoch over its examples in that epoch's shuffled order, return the delta.
        # Each graph call costs a few ms of argument binding and host copies, more than a
        # small client's epoch on the 2NN (docs/performance.md section 9).
        @tf.function(
            input_signature=[
                tf.TensorSpec([self.spec.size], tf.float32),
                x_spec,
                y_spec,
                tf.TensorSpec([None, None], tf.int64),  # one shuffled order per epoch
                scalar,
                scalar,
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([None, 2], tf.int64),  # one DP-SGD noise seed per epoch
            ]
        )
        def train_client(vector, x, y, orders, learning_rate, mu, batch_size, seeds):
            load(vector)
            loss = tf.constant(0.0)
            for e in tf.range(tf.shape(orders)[0]):
                order = orders[e]
                loss = epoch(
                    tf.gather(x, order),
                    tf.gather(y, order),
                    learning_rate,
                    mu,
                    batch_size,
                    seeds[e],
                )
            return flat() - vector, loss

        self._graphs = {"load": load, "train_client": train_client, "predict": predict}

    # Concrete functions: every signature is fixed, and calling them directly skips
    # tf.function's dispatch on the arguments' types. Each is traced at its first use: a
    # task that only needs the model (initialize, register) or only trains (local-train)
    # does not pay for tracing the others, about a second each on 2 cores.
    @functools.cached_property
    def _load(self) -> Callable:
        return self._graphs["load"].get_concrete_function()

    @functools.cached_property
    def _train_client(self) -> Callable:
        return self._graphs["train_client"].get_concrete_function()

    @functools.cached_property
    def _predict(self) -> Callable:
        return self._graphs["predict"].get_concrete_function()

    def initial_weights(self) -> np.ndarray:
        """The seeded initial weights (the model itself holds whatever was trained last)."""
        return self._initial_weights.copy()

    def set_weights(self, vector: np.ndarray) -> None:
        """Load a flat weight vector into the model (and FedProx's anchors)."""
        self._load(np.asarray(vector, dtype=wire.WIRE_DTYPE))

    def train(
        self,
        global_weights: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        learning_rate: float,
        mu: float,
        seed: list[int],
    ) -> LocalResult:
        """E epochs of minibatch SGD from the global weights; shuffling seeded per client."""
        rng = np.random.default_rng(seed)
        orders = np.stack([rng.permutation(len(x)) for _ in range(epochs)])
        seeds = np.zeros((epochs, 2), np.int64)
        if self._dp_sgd:  # each epoch's noise seed: secret, not from the client's seed
            for epoch in range(epochs):
                noise_rng = self._noise_source.generator("dp-sgd", *seed, epoch)
                seeds[epoch] = noise_rng.integers(0, 2**62, size=2)
        vector = np.asarray(global_weights, dtype=wire.WIRE_DTYPE)
        delta, loss = self._train_client(
            vector,
            x,
            y,
            orders,
            np.float32(learning_rate),
            np.float32(mu),
            np.int32(batch_size),
            seeds,
        )
        return LocalResult(delta=delta.numpy(), num_examples=len(x), train_loss=float(loss))

    def evaluate(self, weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> Evaluation:
        self.set_weights(weights)
        probs = np.concatenate(
            [self._predict(x[i : i + 4096]).numpy() for i in range(0, len(x), 4096)]
        )
        return score(probs, y, self.data.num_classes)


def score(probs: np.ndarray, y: np.ndarray, num_classes: int) -> Evaluation:
    """Accuracy, cross-entropy and confusion matrix of predicted class probabilities."""
    predicted = probs.argmax(axis=1)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))
    confusion = np.bincount(y * num_classes + predicted, minlength=num_classes**2)
    return Evaluation(
        accuracy=float(np.mean(predicted == y)),
        loss=loss,
        confusion_matrix=confusion.reshape(num_classes, num_classes),
    )


_slot = threading.local()


@contextlib.contextmanager
def worker_slot(slot: int) -> Iterator[None]:
    """Inside, this thread's `for_config` trainers are those of `slot`: threads that train
    at the same time (the simulation's shards) each need their own model and variables.
    Training does not depend on which trainer runs it (weights are loaded per client,
    shuffles are seeded per client, ops are deterministic), so results are the same."""
    previous = getattr(_slot, "value", 0)
    _slot.value = slot
    try:
        yield
    finally:
        _slot.value = previous


def for_config(config: RunConfig) -> Trainer:
    """The trainer of a run's model for this thread's worker slot (slot 0 unless inside
    `worker_slot`), built on first use and reused by the process."""
    return _trainer(config, getattr(_slot, "value", 0))


@functools.lru_cache(maxsize=4)
def _trainer(config: RunConfig, slot: int) -> Trainer:
    return Trainer(config)
