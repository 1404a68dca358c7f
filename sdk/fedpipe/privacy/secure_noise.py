"""Gaussian noise for DP from a cryptographically secure source, at numpy speed.

numpy's generators (PCG64 and friends) are fast but predictable from their state; DP noise
must not be. Here the randomness is the AES-128-CTR keystream of a key from `os.urandom`
(via `cryptography`, AES-NI), and numpy turns it into Gaussians with the Box-Muller
transform, vectorised. It costs a few times numpy's own `normal` and stays far below the
aggregate it noises (benchmarks/dp_overhead.py measures both).
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_KEY_BYTES = 16
_MANTISSA = 2.0**-53


def gaussian(size: int, stddev: float, key: bytes | None = None) -> np.ndarray:
    """`size` draws of N(0, stddev^2), float64. `key` (16 bytes) is for an explicitly
    reproducible research run only; by default every call takes a fresh key from the OS."""
    key = os.urandom(_KEY_BYTES) if key is None else key
    if len(key) != _KEY_BYTES:
        raise ValueError(f"a noise key is {_KEY_BYTES} bytes, not {len(key)}")
    pairs = (size + 1) // 2
    words = np.empty(2 * pairs, dtype=np.uint64)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    encryptor.update_into(bytes(words.nbytes), words.view(np.uint8))
    # 53 random bits per uniform: u1 in (0, 1] (its log is finite), u2 in [0, 1).
    u1 = ((words[:pairs] >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * _MANTISSA
    u2 = (words[pairs:] >> np.uint64(11)).astype(np.float64) * _MANTISSA
    radius = np.sqrt(-2.0 * np.log(u1))
    radius *= stddev
    angle = u2 * (2.0 * math.pi)
    out = np.empty(2 * pairs)
    np.multiply(radius, np.cos(angle), out=out[:pairs])
    np.multiply(radius, np.sin(angle), out=out[pairs:])
    return out[:size]
