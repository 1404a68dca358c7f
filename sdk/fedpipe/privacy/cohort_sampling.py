"""Secret cohort sampling under DP: Poisson sampling from the OS's cryptographic source.

The accountant (fedpipe.privacy.accounting) composes Poisson-sampled Gaussian mechanisms
with rate q = cohort_size / num_clients. Privacy amplification by sampling holds only if
the sample is what the accountant assumes and nobody can predict it: so under DP each
client joins a round independently with probability q, drawn from secret randomness
(never from the run seed), and the cohort size varies around cohort_size.
"""

from __future__ import annotations

import numpy as np


def poisson_cohort(candidates: list[int], rate: float, rng: np.random.Generator) -> list[int]:
    """Each candidate independently with probability `rate` (sorted ids)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sampling rate {rate} outside [0, 1]")
    draws = rng.random(len(candidates))
    return sorted(int(c) for c, u in zip(candidates, draws, strict=True) if u < rate)
