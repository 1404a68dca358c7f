"""The global model artifact: weights, their spec, and the server optimizer's state."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedpipe.artifacts import wire


@dataclasses.dataclass(frozen=True)
class GlobalModel:
    weights: np.ndarray
    spec: wire.WeightsSpec
    server_state: dict[str, np.ndarray]
    round_number: int  # the last round whose aggregate produced these weights

    def save(self, path: str | Path) -> None:
        meta = {
            "spec": self.spec.to_dict(),
            "checksum": wire.checksum(self.weights),
            "round": self.round_number,
        }
        wire.save_bundle(path, {"weights": self.weights, **self.server_state}, meta)

    @classmethod
    def load(cls, path: str | Path) -> GlobalModel:
        """Read a global model and check it arrived intact."""
        arrays, meta = wire.load_bundle(path)
        weights = arrays.pop("weights")
        if wire.checksum(weights) != meta["checksum"]:
            raise ValueError(f"global model {path}: checksum mismatch, the artifact is corrupted")
        return cls(weights, wire.WeightsSpec.from_dict(meta["spec"]), arrays, meta["round"])
