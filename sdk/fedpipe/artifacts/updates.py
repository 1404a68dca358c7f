"""Client updates and the shard artifact that carries them from local train to aggregate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedpipe.artifacts import wire


@dataclasses.dataclass(frozen=True)
class ClientUpdate:
    client_id: int
    vector: np.ndarray  # the delta (new - global); a masked vector under secure aggregation
    num_examples: int
    train_loss: float
    duration_s: float
    checksum: str
    encoding: str = "float32"

    @classmethod
    def of(cls, client_id: int, vector: np.ndarray, **fields) -> ClientUpdate:
        """An update stamped with the checksum of its vector, as a client sends it."""
        return cls(client_id, vector, checksum=wire.checksum(vector), **fields)


def save_shard(
    path: str | Path, round_number: int, shard: int, updates: list[ClientUpdate]
) -> None:
    arrays = {f"client_{u.client_id}": u.vector for u in updates}
    records = [{k: v for k, v in dataclasses.asdict(u).items() if k != "vector"} for u in updates]
    wire.save_bundle(path, arrays, {"round": round_number, "shard": shard, "updates": records})


def load_shard(path: str | Path) -> list[ClientUpdate]:
    arrays, meta = wire.load_bundle(path)
    return [ClientUpdate(vector=arrays[f"client_{r['client_id']}"], **r) for r in meta["updates"]]
