"""The centralized baseline: the same model trained on the pooled client data.

It is what federated training is measured against: the accuracy one would get if the
data could leave its owners.
"""

from __future__ import annotations

import numpy as np

from fedpipe.config import RunConfig
from fedpipe.data import partition
from fedpipe.training import trainer
from fedpipe.training.trainer import Evaluation


def train_centralized(config: RunConfig, epochs: int) -> Evaluation:
    """SGD with the clients' learning rate and batch size over the union of their data."""
    model_trainer = trainer.for_config(config)
    indices = np.concatenate(partition.client_indices(config))
    data = model_trainer.data
    weights = model_trainer.initial_weights()
    result = model_trainer.train(
        weights,
        data.x_train[indices],
        data.y_train[indices],
        epochs=epochs,
        batch_size=config.training.batch_size,
        learning_rate=config.training.learning_rate,
        mu=0.0,
        seed=[config.seed, 0xCE47],
    )
    return model_trainer.evaluate(weights + result.delta, data.x_heldout, data.y_heldout)
