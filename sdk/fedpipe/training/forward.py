"""Score a global model with a numpy forward pass, without loading TensorFlow.

Evaluating the logistic and MLP models is a few matrix products; importing TensorFlow
and building the Keras model to do them costs seconds per task. The stages that only
score a model (evaluate, and the initial and final scoring) use this pass for the dense
models and fall back to the Keras trainer for the CNN.
"""

from __future__ import annotations

import numpy as np

from fedpipe.artifacts import wire
from fedpipe.config import RunConfig
from fedpipe.data import datasets
from fedpipe.ops import machine
from fedpipe.training.trainer import Evaluation, score

DENSE_MODELS = ("logistic_regression", "mlp")


def predict(weights: np.ndarray, spec: wire.WeightsSpec, x: np.ndarray) -> np.ndarray:
    """Class probabilities of a stack of Dense layers (ReLU between, softmax last), the
    layout models.build gives the dense models; float32 throughout, as Keras computes. One
    BLAS thread (machine.one_blas_thread): no worker left spinning on a training core."""
    tensors = spec.split(np.asarray(weights, dtype=np.float32))
    kinds = [name.rsplit("/", 1)[-1] for name in spec.names]
    dense = all(k.ndim == 2 for k in tensors[0::2]) and all(b.ndim == 1 for b in tensors[1::2])
    if len(tensors) % 2 or kinds != ["kernel", "bias"] * (len(tensors) // 2) or not dense:
        raise ValueError(f"not a stack of Dense layers: {list(spec.names)}")
    h = np.asarray(x, dtype=np.float32)
    layers = list(zip(tensors[0::2], tensors[1::2], strict=True))
    with machine.one_blas_thread():
        for i, (kernel, bias) in enumerate(layers):
            h = h @ kernel + bias
            if i < len(layers) - 1:
                h = np.maximum(h, np.float32(0))
    h = np.exp(h - h.max(axis=1, keepdims=True))
    return h / h.sum(axis=1, keepdims=True)


def heldout_evaluation(
    config: RunConfig, weights: np.ndarray, spec: wire.WeightsSpec
) -> tuple[Evaluation, datasets.Dataset]:
    """The model's score on the run's held-out set (and the dataset it was scored on):
    numpy for the dense models, the Keras trainer otherwise."""
    data = datasets.load(config)
    if config.model.name in DENSE_MODELS:
        probs = predict(weights, spec, data.x_heldout)
        return score(probs, data.y_heldout, data.num_classes), data
    from fedpipe.training import trainer

    return trainer.for_config(config).evaluate(weights, data.x_heldout, data.y_heldout), data
