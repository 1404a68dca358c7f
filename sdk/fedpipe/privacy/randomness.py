"""Where every secret random draw comes from: the OS's cryptographic source by default.

Two kinds of randomness meet in a federated run. What a simulation must repeat
(partitions, shuffles, initial weights, simulated faults) flows from the run seed. What
protects someone (SecAgg key material, session ids, DP noise, secret cohort sampling
under DP) comes from here: `os.urandom` in the default `secure` mode, so that nobody who
knows the seed (an MLflow param, in every task's config) can regenerate it. Only the
explicit research mode `reproducible-simulation` derives these draws from the seed, and
a run in that mode is tagged as giving no privacy guarantee.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fedpipe.config import RunConfig

SECURE = "secure"
REPRODUCIBLE = "reproducible-simulation"
MODES = (SECURE, REPRODUCIBLE)
GUARANTEE_TAG = "fedpipe.privacy_guarantee"
NO_GUARANTEE = "none (reproducible-simulation mode)"


@dataclasses.dataclass(frozen=True)
class Randomness:
    """Secret randomness for one run. `label` parts name the purpose of a draw (e.g.
    "dp-noise", round, client): they matter only in reproducible mode, where they keep
    the seeded streams of different purposes apart."""

    mode: str = SECURE
    seed: int = 0

    @property
    def reproducible(self) -> bool:
        return self.mode == REPRODUCIBLE

    def token_bytes(self, n: int, *label: object) -> bytes:
        """n secret bytes: os.urandom, or (reproducible mode) SHAKE-256 of seed and label."""
        if not self.reproducible:
            return os.urandom(n)
        return hashlib.shake_256(self._material(label)).digest(n)

    def token_hex(self, n: int, *label: object) -> str:
        return self.token_bytes(n, *label).hex()

    def generator(self, *label: object) -> np.random.Generator:
        """A numpy Generator seeded with 256 secret bits (PCG64 stretches them; a fresh
        seed for every draw site keeps the stream short-lived).

        Why a non-cryptographic stretcher is acceptable for DP noise: PCG64's state could
        be recovered from enough of its raw outputs, but its outputs never leave the
        process raw (only their sum with clipped updates is released: the Gaussian
        mechanism the accountant assumes), and every draw site starts from its own 256
        bits of os.urandom, so neither the run seed nor another site's noise predicts it.
        It draws 200k normals in a few ms; AES-CTR with Box-Muller cost 1.6x that
        (docs/performance.md)."""
        seed = int.from_bytes(self.token_bytes(32, "generator", *label), "big")
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))

    def _material(self, label: tuple[object, ...]) -> bytes:
        return "/".join(["fedpipe-reproducible", str(self.seed), *map(str, label)]).encode()


def for_config(config: RunConfig) -> Randomness:
    """The run's source of secret randomness (the one place that reads the config)."""
    return of(config.privacy.mode, config.seed)


def of(mode: str, seed: int) -> Randomness:
    if mode not in MODES:
        raise ValueError(f"privacy mode {mode!r}: one of {', '.join(MODES)}")
    return Randomness(mode, seed)


def run_tags(mode: str) -> dict[str, str]:
    """The tags a run (and a registered version) carries: a loud warning in reproducible
    mode, where anyone who knows the seed can regenerate every mask and noise draw."""
    if mode == REPRODUCIBLE:
        return {GUARANTEE_TAG: NO_GUARANTEE, "fedpipe.privacy_mode": mode}
    return {"fedpipe.privacy_mode": mode}
