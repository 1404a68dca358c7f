"""A scanner for one thing: a client's individual update anywhere in a set of files or
records, in any of the forms it could take there.

A *needle* is one vector (a client's float32 delta, or the fixed-point words SecAgg would
send unmasked). It is looked for two ways in every file:

- as bytes: windows of consecutive coordinates in the vector's own little-endian dtype,
  at any offset (raw dumps, sqlite pages, protobuf, logs of bytes);
- as numbers, within a tolerance: every numeric array the file holds is searched for a
  stretch that matches the vector coordinate by coordinate (.npy, .npz and any zip
  member, JSON lists, base64 or hex strings inside JSON, numbers printed in text, and the
  file's raw bytes read as float32/float64/int32 at each alignment), so a float16 copy,
  a printed array or a re-encoded one is found too.

A match needs MIN_MATCH non-zero coordinates, 99% of them within tolerance: zeros and
chance agreements do not count.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from fedpipe.secagg.quantization import TRAILING_WORDS

MIN_MATCH = 16  # non-zero coordinates that must agree
WINDOW = 8  # coordinates per byte pattern
PATTERNS = 4  # byte patterns per needle, from different parts of the vector
_NUMBER = re.compile(rb"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=_-]{24,}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2}){16,}$")
_MAX_RAW_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class Needle:
    label: str
    vector: np.ndarray  # in its stored dtype: float32 delta, or uint32/uint64 words
    rtol: float
    atol: float

    @property
    def values(self) -> np.ndarray:
        return self.vector.astype(np.float64)

    def patterns(self) -> list[bytes]:
        """WINDOW-coordinate byte strings from spread-out stretches where every coordinate is
        non-zero (a stretch of zeros would match any zeroed buffer)."""
        v = np.ascontiguousarray(self.vector)
        nonzero = v != 0
        starts = [i for i in range(0, len(v) - WINDOW + 1) if nonzero[i : i + WINDOW].all()]
        if not starts:
            return []
        picks = np.linspace(0, len(starts) - 1, PATTERNS).astype(int)
        return [v[starts[p] : starts[p] + WINDOW].tobytes() for p in sorted(set(picks))]


def needles_of(label: str, delta: np.ndarray, words: np.ndarray, scale: float) -> list[Needle]:
    """The forms of one client's update: its float32 delta; the words it would have masked
    (as stored, and read as signed integers); and those words decoded back to floats."""
    signed = words.view(np.int32 if words.dtype == np.uint32 else np.int64)
    coordinates = signed[:-TRAILING_WORDS]
    return [
        Needle(f"{label} delta", np.asarray(delta, np.float32), rtol=1e-3, atol=1e-7),
        Needle(f"{label} fixed-point words", words, rtol=0.0, atol=1.0),
        Needle(f"{label} fixed-point words (signed)", signed, rtol=0.0, atol=1.0),
        Needle(
            f"{label} weighted delta", coordinates.astype(np.float64) / scale, rtol=1e-3, atol=1e-7
        ),
    ]


_GRAM = 4  # consecutive coordinates hashed together to find candidate stretches
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 1], np.uint64)


def _codes(values: np.ndarray, kind: str) -> np.ndarray:
    """Each value reduced to a code that small errors rarely change, 0 for a value that
    says nothing (zero, non-finite, a non-integer where integers are sought): `fp16` and
    `bf16` are the value rounded to those formats' bits, `int` the integer itself."""
    with np.errstate(all="ignore"):
        v = np.asarray(values, np.float64).ravel()
        finite = np.isfinite(v)
        if kind == "int":
            ok = finite & (v == np.round(v)) & (np.abs(v) < 2.0**63) & (v != 0)
            return np.where(ok, v, 0).astype(np.int64).view(np.uint64)
        if kind == "fp16":
            bits = v.astype(np.float16).view(np.uint16).astype(np.uint64)
            magnitude = bits & 0x7FFF
            ok = finite & (magnitude != 0) & (magnitude < 0x7C00)
        else:
            bits = v.astype(np.float32).view(np.uint32).astype(np.uint64)
            bits = (bits + 0x8000) >> 16
            ok = finite & ((bits & 0x7FFF) != 0)
        return np.where(ok, bits, 0).astype(np.uint64)


def _grams(codes: np.ndarray) -> np.ndarray:
    """A hash of every _GRAM consecutive codes; 0 where any of them is 0."""
    if codes.size < _GRAM:
        return np.zeros(0, np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(codes, _GRAM)
    with np.errstate(over="ignore"):
        mixed = (windows * _MIX).sum(axis=1, dtype=np.uint64) | np.uint64(1)
    return np.where((windows != 0).all(axis=1), mixed, 0)


class Index:
    """Every needle's grams, to find candidate stretches in a haystack in one pass."""

    def __init__(self, needles: list[Needle]) -> None:
        self.needles = needles
        self.patterns = [(n.label, n.patterns()) for n in needles]
        self.tables = {}
        for kind in ("fp16", "bf16", "int"):
            keys, owners, positions = [], [], []
            for i, needle in enumerate(needles):
                if (kind == "int") != (needle.vector.dtype.kind in "iu"):
                    continue
                grams = _grams(_codes(needle.vector, kind))
                at = np.flatnonzero(grams)
                keys.append(grams[at])
                owners.append(np.full(at.size, i))
                positions.append(at)
            if keys:
                k, o, p = np.concatenate(keys), np.concatenate(owners), np.concatenate(positions)
                order = np.argsort(k, kind="stable")
                self.tables[kind] = (k[order], o[order], p[order])

    def found(self, haystack: np.ndarray) -> set[int]:
        """Indices of the needles a stretch of the haystack matches within tolerance."""
        h = np.asarray(haystack).ravel()
        if h.size < MIN_MATCH:
            return set()
        hits: set[int] = set()
        for kind, (keys, owners, positions) in self.tables.items():
            grams = _grams(_codes(h, kind))
            at = np.minimum(np.searchsorted(keys, grams), keys.size - 1)
            candidates = np.flatnonzero((keys[at] == grams) & (grams != 0))[:10_000]
            tried: set[tuple[int, int]] = set()
            for p in candidates:
                lo = np.searchsorted(keys, grams[p], "left")
                hi = np.searchsorted(keys, grams[p], "right")
                for i, k in zip(owners[lo:hi], positions[lo:hi], strict=True):
                    pair = (int(i), int(p) - int(k))
                    if pair[0] in hits or pair in tried or len(tried) > 2_000:
                        continue
                    tried.add(pair)
                    if _matches(h, self.needles[pair[0]], pair[1]):
                        hits.add(pair[0])
        return hits


def _matches(haystack: np.ndarray, needle: Needle, offset: int) -> bool:
    """Whether haystack[offset + i] is within tolerance of needle[i] for 99% of the
    needle's significant coordinates that the haystack covers (at least MIN_MATCH)."""
    n = needle.values
    lo, hi = max(0, -offset), min(len(n), len(haystack) - offset)
    if hi - lo < MIN_MATCH:
        return False
    part = n[lo:hi]
    significant = np.abs(part) > 10 * needle.atol + 1e-12
    if significant.sum() < MIN_MATCH:
        return False
    with np.errstate(all="ignore"):
        h = np.asarray(haystack[lo + offset : hi + offset], np.float64)
        close = np.abs(h - part) <= needle.atol + needle.rtol * np.abs(part)
    return bool(close[significant].mean() >= 0.99)


def _arrays_in_json(value: object) -> Iterator[np.ndarray | bytes]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _arrays_in_json(v)
    elif isinstance(value, list):
        numbers = [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) >= MIN_MATCH:
            yield np.asarray(numbers, np.float64)
        for v in value:
            if isinstance(v, dict | list | str):
                yield from _arrays_in_json(v)
    elif isinstance(value, str):
        yield from _decoded_string(value)


def _decoded_string(text: str) -> Iterator[bytes]:
    if _HEX.match(text):
        yield binascii.unhexlify(text)
    elif _BASE64.match(text):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                yield decode(text + "=" * (-len(text) % 4))
            except (binascii.Error, ValueError):
                continue


def _raw_views(data: bytes) -> Iterator[np.ndarray]:
    """The bytes read as float32, float64, int32 and uint32 at every alignment."""
    if len(data) > _MAX_RAW_BYTES:
        return
    for dtype in (np.float32, np.float64, np.int32, np.uint32, np.int64, np.uint64):
        size = np.dtype(dtype).itemsize
        for start in range(size if dtype in (np.float32, np.float64) else 1):
            usable = (len(data) - start) // size * size
            if usable >= MIN_MATCH * size:
                yield np.frombuffer(data, dtype, usable // size, start)


def arrays_in(data: bytes, name: str = "", depth: int = 0) -> Iterator[np.ndarray | bytes]:
    """Every numeric array and every embedded byte string found in a file's bytes."""
    yield data
    if depth > 3:
        return
    yield from _raw_views(data)
    if data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError):
            inner = b""
        yield from arrays_in(inner, name, depth + 1) if inner else ()
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    yield from arrays_in(archive.read(member), member, depth + 1)
        except zipfile.BadZipFile:
            pass
    if data[:6] == b"\x93NUMPY":
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
            if array.dtype.kind in "fiub":
                yield array.ravel()
        except ValueError:
            pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        documents = [text, *text.splitlines()]
        for doc in documents:
            try:
                parsed = json.loads(doc)
            except ValueError:
                continue
            for found in _arrays_in_json(parsed):
                if isinstance(found, bytes):
                    yield from arrays_in(found, name, depth + 1)
                else:
                    yield found
    numbers = _NUMBER.findall(data)
    if len(numbers) >= MIN_MATCH:
        yield np.asarray([float(x) for x in numbers], np.float64)


def found_in(data: bytes, needles: Iterable[Needle] | Index, name: str = "") -> set[str]:
    """The labels of the needles this file's bytes hold, in any form."""
    index = needles if isinstance(needles, Index) else Index(list(needles))
    patterns = index.patterns
    hits: set[str] = set()
    for item in arrays_in(data, name):
        if isinstance(item, bytes):
            hits |= {label for label, ps in patterns if any(p in item for p in ps)}
        elif item.dtype.kind in "fiu":
            hits |= {index.needles[i].label for i in index.found(item)}
    return hits


def scan(roots: Iterable[Path], needles: Iterable[Needle]) -> dict[str, set[str]]:
    """{file: labels found} for every file under the roots that holds any needle."""
    index = Index(list(needles))
    found = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            hits = found_in(path.read_bytes(), index, path.name)
            if hits:
                found[str(path)] = hits
    return found
