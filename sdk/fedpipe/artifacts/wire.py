"""Weights and updates on the wire: a flat float32 vector, its spec and a checksum.

Every artifact that carries model weights or client updates is a *bundle*: one .npz file
holding named arrays plus a JSON metadata record. Aggregation works on flat vectors, so
it is fast and does not depend on the ML framework.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

WIRE_DTYPE = np.dtype(np.float32)


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """Names and shapes of the tensors a flat vector is cut into."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = WIRE_DTYPE.name

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightsSpec:
        return cls(tuple(d["names"]), tuple(tuple(s) for s in d["shapes"]), d["dtype"])

    def split(self, vector: np.ndarray) -> list[np.ndarray]:
        """Cut a flat vector back into the model's tensors."""
        out, start = [], 0
        for shape in self.shapes:
            n = int(np.prod(shape))
            out.append(vector[start : start + n].reshape(shape))
            start += n
        return out


class UpdateRejected(ValueError):
    """A client's update failed validation; the round goes on without it."""

    def __init__(self, client_id: int, reason: str) -> None:
        self.client_id, self.reason = client_id, reason
        super().__init__(f"update of client {client_id} rejected: {reason}")


def flatten(tensors: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(t, dtype=WIRE_DTYPE).ravel() for t in tensors])


def checksum(vector: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vector).tobytes()).hexdigest()


def validate_update(client_id: int, vector: np.ndarray, spec: WeightsSpec, claimed: str) -> None:
    """Refuse an update whose dtype, shape, checksum or values are wrong, naming why."""
    if vector.dtype != WIRE_DTYPE:
        raise UpdateRejected(client_id, f"dtype {vector.dtype}, expected {WIRE_DTYPE.name}")
    if vector.shape != (spec.size,):
        raise UpdateRejected(client_id, f"shape {vector.shape}, expected ({spec.size},)")
    if checksum(vector) != claimed:
        raise UpdateRejected(client_id, "checksum mismatch (corrupted in transit or storage)")
    bad = ~np.isfinite(vector)
    if bad.any():
        kinds = sorted({"NaN" if np.isnan(v) else "Inf" for v in vector[bad][:1000]})
        raise UpdateRejected(client_id, f"{int(bad.sum())} non-finite values ({', '.join(kinds)})")


def save_bundle(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write named arrays plus JSON metadata to one .npz file (no pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta, sort_keys=True)), **arrays)


def load_bundle(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
        meta = json.loads(str(data["__meta__"]))
    return arrays, meta
