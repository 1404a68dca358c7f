"""What the server decides for a round: the cohort (from select) and the round plan
(from broadcast) that clients read: global weights, hyper-parameters and shards."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedpipe.artifacts import wire


@dataclasses.dataclass(frozen=True)
class Cohort:
    round_number: int
    clients: list[int]
    shards: list[list[int]]
    stopped: bool  # the target was reached earlier: this round passes the model through
    started_at: float  # wall clock when the round began (for durations, not for results)
    # Aggregation weight announced per client, in `clients` order (fedpipe.clients.weights).
    client_weights: list[float] = dataclasses.field(default_factory=list)
    # The round's secure-aggregation session id, chosen by the server from secret randomness.
    session_id: str = ""

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(dataclasses.asdict(self), sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Cohort:
        return cls(**json.loads(Path(path).read_text()))


@dataclasses.dataclass(frozen=True)
class LocalTraining:
    """The hyper-parameters every client of the round trains with."""

    epochs: int
    batch_size: int
    learning_rate: float
    fedprox_mu: float


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    cohort: Cohort
    weights: np.ndarray
    spec: wire.WeightsSpec
    training: LocalTraining
    seed: int

    def save(self, path: str | Path) -> None:
        meta: dict[str, Any] = {
            "cohort": dataclasses.asdict(self.cohort),
            "spec": self.spec.to_dict(),
            "checksum": wire.checksum(self.weights),
            "training": dataclasses.asdict(self.training),
            "seed": self.seed,
        }
        wire.save_bundle(path, {"weights": self.weights}, meta)

    @classmethod
    def load(cls, path: str | Path) -> RoundPlan:
        arrays, meta = wire.load_bundle(path)
        if wire.checksum(arrays["weights"]) != meta["checksum"]:
            raise ValueError(f"round plan {path}: checksum mismatch, the artifact is corrupted")
        return cls(
            cohort=Cohort(**meta["cohort"]),
            weights=arrays["weights"],
            spec=wire.WeightsSpec.from_dict(meta["spec"]),
            training=LocalTraining(**meta["training"]),
            seed=meta["seed"],
        )
