"""L2 clipping, the one implementation every layer that bounds an update uses."""

from __future__ import annotations

import numpy as np

from fedpipe.aggregation.vector_math import l2_norm


def clip_factor(
    vector: np.ndarray, bound: float, scratch: np.ndarray | None = None
) -> tuple[float, float]:
    """The factor that scales the vector to L2 norm at most `bound` (1.0 if within it), and
    its norm, taken of the vector as float64. `scratch` (float64, the vector's size) holds
    that copy and is reused: clipping a cohort this way allocates one model's worth of
    memory, not one per update (fresh memory is page-faulted in, which cost more than the
    arithmetic: docs/performance.md section 9)."""
    if vector.dtype != np.float64:
        scratch = np.empty(vector.size, np.float64) if scratch is None else scratch
        np.copyto(scratch, vector)
        vector = scratch
    norm = l2_norm(vector)  # without BLAS: see aggregation/vector_math.py
    return (bound / norm if norm > bound else 1.0), norm


def clip_l2(vector: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """The vector (as float64) scaled down to L2 norm at most `bound`, and its original norm."""
    scaled = vector.astype(np.float64)
    factor, norm = clip_factor(scaled, bound)
    if norm > bound:
        scaled *= factor
    return scaled, norm


def clip_to_norm(vector: np.ndarray, bound: float) -> np.ndarray:
    """The vector clipped to L2 norm `bound`, in its own dtype (unchanged if within it)."""
    clipped, norm = clip_l2(vector, bound)
    return vector if norm <= bound else clipped.astype(vector.dtype)
