"""Weights and updates on the wire: a flat float32 vector, its spec and a checksum.

Every artifact that carries model weights or client updates is a *bundle*: one .npz file
holding named arrays plus a JSON metadata record. Aggregation works on flat vectors, so
it is fast and does not depend on the ML framework.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

WIRE_DTYPE = np.dtype(np.float32)
# What one bundle may inflate to, all arrays together: a crafted header or a deflate bomb
# is refused before (or as soon as) it passes this, never allocated or inflated beyond it.
MAX_BUNDLE_BYTES = 256 * 2**20
MAX_BUNDLE_MEMBERS = 100_000
_NPY_HEADER_MAX = 2**16  # numpy's .npy header limit (format version 1.0)
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local file header


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
    return hashlib.sha256(memoryview(np.ascontiguousarray(vector))).hexdigest()


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
    header (dtype, shape) is checked against the budget before its data is used, object
    dtypes (pickles) are refused, and at most `max_bytes` are read in all. Stored members
    (what save_bundle writes) are read whole only when their stored size fits the budget;
    compressed ones through a bounded stream, so a deflate bomb stops at its declared
    size. Any problem raises BundleUnreadable."""
    try:
        with open(path, "rb") as file, zipfile.ZipFile(file) as archive:
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
                if info.compress_type == zipfile.ZIP_STORED:  # what save_bundle writes
                    arrays[name] = _read_npy(_stored_member(file, info, budget), name, budget)
                else:
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


class _MemberBytes:
    """A stream over a member's bytes whose reads are views, not copies."""

    def __init__(self, data: bytearray) -> None:
        self._view, self._position = memoryview(data), 0

    def read(self, size: int) -> memoryview:
        chunk = self._view[self._position : self._position + size]
        self._position += len(chunk)
        return chunk


def _stored_member(file: BinaryIO, info: zipfile.ZipInfo, budget: int) -> _MemberBytes:
    """An uncompressed member's bytes, CRC-checked, read with one call into one buffer
    that its array then uses: zipfile's reader copies the data several times on the way,
    and fresh buffers cost page faults, most of a model's load time."""
    if info.compress_size > budget + _NPY_HEADER_MAX:
        raise BundleUnreadable(
            f"{info.filename}: {info.compress_size} bytes stored, over the {budget} bytes "
            "left of the bundle's cap"
        )
    file.seek(info.header_offset)
    header = file.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise BundleUnreadable(f"{info.filename}: no local file header at its offset")
    name_size, extra_size = _LOCAL_HEADER.unpack(header)[-2:]
    file.seek(name_size + extra_size, io.SEEK_CUR)
    data = bytearray(info.compress_size)
    if file.readinto(data) != info.compress_size:
        raise BundleUnreadable(f"{info.filename}: truncated (fewer bytes than its entry says)")
    if zlib.crc32(data) != info.CRC:
        raise BundleUnreadable(f"{info.filename}: bad CRC-32 (corrupted in storage)")
    return _MemberBytes(data)


def _read_npy(stream: Any, name: str, budget: int) -> np.ndarray:
    """One .npy member, header first: its declared size must fit the budget before its
    data is read from the stream (a stored member's bytes are already in memory, bounded
    by _stored_member), and the member must hold exactly that many bytes."""
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
    if not array.flags.writeable:  # a view of zipfile's bytes, not of our own buffer
        array = array.copy()
    return array.reshape(shape, order="F" if fortran else "C")
