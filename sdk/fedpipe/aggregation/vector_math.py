"""Norms and dot products of update vectors without BLAS.

numpy sends `v @ v`, np.dot and np.linalg.norm of 1-D arrays to OpenBLAS, which wakes its
worker threads for each call: on a busy machine that cost ~20 ms per 200k-parameter
update, more than the arithmetic by two orders of magnitude (it made the DP aggregate 25x
the plain one, and the agreement statistics a visible part of aggregation). einsum's own
loops run in the calling thread; chunks keep the float64 copies in cache.
"""

from __future__ import annotations

import math

import numpy as np

_CHUNK = 1 << 16  # float64 words of a chunk: 512 KiB


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum(a * b), accumulated in float64 chunk by chunk (no full float64 copies)."""
    if a.dtype == b.dtype == np.float64:
        return float(np.einsum("i,i->", a, b))
    buffer_a, buffer_b = np.empty(min(a.size, _CHUNK)), np.empty(min(b.size, _CHUNK))
    total = 0.0
    for start in range(0, a.size, _CHUNK):
        n = min(_CHUNK, a.size - start)
        np.copyto(buffer_a[:n], a[start : start + n])
        if b is a:
            total += float(np.einsum("i,i->", buffer_a[:n], buffer_a[:n]))
            continue
        np.copyto(buffer_b[:n], b[start : start + n])
        total += float(np.einsum("i,i->", buffer_a[:n], buffer_b[:n]))
    return total


def l2_norm(vector: np.ndarray) -> float:
    return math.sqrt(dot(vector, vector))


def cosine(
    a: np.ndarray, b: np.ndarray, norm_a: float | None = None, norm_b: float | None = None
) -> float:
    """Agreement of two vectors (0 when either is zero); norms passed are those already
    known (each is a pass over the vector)."""
    norms = (l2_norm(a) if norm_a is None else norm_a) * (l2_norm(b) if norm_b is None else norm_b)
    return dot(a, b) / norms if norms > 0 else 0.0
