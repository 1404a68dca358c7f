"""Client updates and the shard artifact that carries them from local train to aggregate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

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


class ShardUnreadable(ValueError):
    """A shard artifact that cannot be read: its clients count as sending nothing."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path.name}: {reason}")


_FIELDS = {
    "client_id": int,
    "num_examples": int,
    "train_loss": float,
    "duration_s": float,
    "checksum": str,
    "encoding": str,
}


def load_shard(path: str | Path) -> list[ClientUpdate]:
    """The updates of a shard artifact. Whatever is wrong with the file (any exception,
    a crafted header, a bomb, unknown or ill-typed fields, a missing or extra array)
    raises ShardUnreadable with the reason; the values are validated later, per update."""
    try:
        arrays, meta = wire.load_bundle(path)
        records = meta.get("updates")
        if not isinstance(records, list):
            raise ValueError("no list of update records")
        updates = [_update(record, arrays) for record in records]
        if len(arrays) != len(updates):
            raise ValueError(f"{len(arrays)} arrays for {len(updates)} update records")
        return updates
    except Exception as e:
        raise ShardUnreadable(path, f"{type(e).__name__}: {e}") from e


def _update(record: Any, arrays: dict[str, np.ndarray]) -> ClientUpdate:
    if not isinstance(record, dict) or set(record) != set(_FIELDS):
        raise ValueError(f"an update record must have exactly the fields {sorted(_FIELDS)}")
    for name, kind in _FIELDS.items():
        value = record[name]
        number = kind is float and isinstance(value, int)
        if isinstance(value, bool) or not (isinstance(value, kind) or number):
            raise ValueError(f"field {name} = {value!r} is not a {kind.__name__}")
    vector = arrays.get(f"client_{record['client_id']}")
    if vector is None or vector.ndim != 1:
        raise ValueError(f"no 1-d array for client {record['client_id']}")
    return ClientUpdate(vector=vector, **record)
