"""The Keras models a federation can train: logistic regression, the 2NN MLP, a small CNN."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedpipe.config import ConfigError, RunConfig
from fedpipe.data.datasets import Dataset

if TYPE_CHECKING:
    import keras


def build(config: RunConfig, data: Dataset) -> keras.Model:
    """A fresh model whose initial weights depend only on the run seed."""
    import keras

    keras.utils.set_random_seed(config.seed)
    inputs = keras.Input(shape=(data.num_features,), name="features")
    if config.model.name == "logistic_regression":
        x = inputs
    elif config.model.name == "mlp":  # McMahan et al. 2017 "2NN": two hidden ReLU layers
        x = keras.layers.Dense(config.model.hidden_units, activation="relu")(inputs)
        x = keras.layers.Dense(config.model.hidden_units, activation="relu")(x)
    else:
        if data.image_shape is None:
            raise ConfigError(
                "model.name", "cnn", f"a tabular model for dataset {config.data.dataset}"
            )
        x = keras.layers.Reshape((*data.image_shape, 1))(inputs)
        for filters in (32, 64):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = keras.layers.MaxPooling2D(2, padding="same")(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(128, activation="relu")(x)
    outputs = keras.layers.Dense(data.num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=config.model.name)
