"""L2 clipping, the one implementation every layer that bounds an update uses."""

from __future__ import annotations

import numpy as np

from fedpipe.aggregation.vector_math import l2_norm


def clip_l2(vector: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """The vector (as float64) scaled down to L2 norm at most `bound`, and its original norm."""
    scaled = vector.astype(np.float64)
    norm = l2_norm(scaled)  # without BLAS: see aggregation/vector_math.py
    if norm > bound:
        scaled *= bound / norm
    return scaled, norm


def clip_to_norm(vector: np.ndarray, bound: float) -> np.ndarray:
    """The vector clipped to L2 norm `bound`, in its own dtype (unchanged if within it)."""
    clipped, norm = clip_l2(vector, bound)
    return vector if norm <= bound else clipped.astype(vector.dtype)
