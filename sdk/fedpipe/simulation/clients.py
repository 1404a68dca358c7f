"""Simulated clients: a partition of a dataset, wrapped by the simulation's mods
(fedpipe.simulation.mods)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpipe.clients.runtime import InProcessClients
from fedpipe.config import RunConfig
from fedpipe.data import partition
from fedpipe.simulation import mods
from fedpipe.training import trainer


class PartitionData:
    """Each simulated client's examples: its share of the run's training pool."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def client_data(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        return partition.client_data(self.config, client_id)


def simulated_clients(config: RunConfig, state_dir: Path | None = None) -> InProcessClients:
    """The simulated clients of a run; `state_dir` is where they keep what they carry
    between rounds (one folder shared by the simulated clients of a run). The trainer (and
    with it the dataset) is loaded only when a client trains."""
    return InProcessClients(
        config,
        PartitionData(config),
        lambda: trainer.for_config(config),
        lambda model_trainer: mods.for_config(config, model_trainer.data.num_classes),
        state_dir,
    )
