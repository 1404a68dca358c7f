"""Weights and updates on the wire: a flat float32 vector, its spec and a checksum.

Every artifact that carries model weights or client updates is a *bundle*: one .npz file
holding named arrays plus a JSON metadata record. Aggregation works on flat vectors, so
it is fast and does not depend on the ML framework.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

WIRE_DTYPE = np.dtype(np.float32)
# What one bundle may inflate to, all arrays together: a crafted header or a deflate bomb
# is refused before (or as soon as) it passes this, never allocated or inflated beyond it.
MAX_BUNDLE_BYTES = 256 * 2**20
MAX_BUNDLE_MEMBERS = 100_000


class BundleUnreadable(ValueError):
    """A bundle that is not a well-formed, bounded npz of plain arrays (the reason says why)."""


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


def load_bundle(
    path: str | Path, max_bytes: int = MAX_BUNDLE_BYTES
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a bundle written by save_bundle, trusting nothing in it: each member's .npy
    header (dtype, shape) is checked before its data is read, object dtypes (pickles) are
    refused, and at most `max_bytes` are inflated in all (read through a bounded stream,
    so a deflate bomb stops at the declared size). Any problem raises BundleUnreadable."""
    try:
        with zipfile.ZipFile(Path(path)) as archive:
            members = archive.infolist()
            if len(members) > MAX_BUNDLE_MEMBERS:
                raise BundleUnreadable(f"{len(members)} members (at most {MAX_BUNDLE_MEMBERS})")
            budget = max_bytes
            arrays: dict[str, np.ndarray] = {}
            for info in members:
                if not info.filename.endswith(".npy"):
                    raise BundleUnreadable(f"member {info.filename!r} is not a .npy array")
                name = info.filename.removesuffix(".npy")
                if name in arrays:
                    raise BundleUnreadable(f"member {name!r} appears twice")
                with archive.open(info) as stream:
                    arrays[name] = _read_npy(stream, name, budget)
                budget -= arrays[name].nbytes
        meta_array = arrays.pop("__meta__", None)
        if meta_array is None or meta_array.dtype.kind != "U" or meta_array.shape != ():
            raise BundleUnreadable("no __meta__ record (a 0-d string array)")
        meta = json.loads(str(meta_array))
        if not isinstance(meta, dict):
            raise BundleUnreadable("__meta__ is not a JSON object")
    except BundleUnreadable:
        raise
    except Exception as e:  # every other failure of a crafted file: unreadable, with why
        raise BundleUnreadable(f"{type(e).__name__}: {e}") from e
    return arrays, meta


def _read_npy(stream: Any, name: str, budget: int) -> np.ndarray:
    """One .npy member, header first: its declared size must fit the budget before a
    byte of data is read, and the member must hold exactly that many bytes."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise BundleUnreadable(f"{name}: unknown .npy version {version}")
    if dtype.hasobject or dtype.kind not in "biufcU":
        raise BundleUnreadable(f"{name}: dtype {dtype} refused (no pickles or objects)")
    count = 1
    for n in shape:
        count *= int(n)
    size = count * dtype.itemsize
    if size > budget:
        raise BundleUnreadable(
            f"{name}: header declares shape {shape} of {dtype} ({size} bytes), over the "
            f"{budget} bytes left of the bundle's cap"
        )
    data = stream.read(size)
    if len(data) != size:
        raise BundleUnreadable(f"{name}: {len(data)} bytes of data, header declares {size}")
    if stream.read(1):
        raise BundleUnreadable(f"{name}: more data than its header declares")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C").copy()
