"""Simulated attacks: what hostile clients do to their data or their update.

Applied in the local_train stage, so an attack runs the same in `fedpipe simulate` and
in the pipeline. The attackers are a fixed, seeded set of `attack_fraction x num_clients`
clients (a hostile participant stays hostile); whenever one of them is selected it:

- `sign_flip`: sends -attack_scale x its honest update;
- `scaling`: sends attack_scale x its honest update (model replacement, Bagdasaryan et
  al. 2020: a boost near the cohort size replaces the global model by the attacker's);
- `gaussian_noise`: sends pure noise N(0, attack_noise_std^2) of the update's shape;
- `label_flip`: trains honestly on flipped labels (label -> num_classes - 1 - label).

An attacker that crafts its update also skips the honest client steps that it runs
itself: under secure aggregation the clip (or norm bound) and the DP noise share happen in
the client, so a hostile client does not apply them (`skips_client_steps`), and only the
fixed-point range bounds what it sends. A real malicious client can do worse still: it can
send any words at all (see docs/secure_aggregation.md).
"""

from __future__ import annotations

import numpy as np

from fedpipe.artifacts import wire
from fedpipe.config import RunConfig

_ATTACKERS_TAG = 0xBAD
_NOISE_TAG = 0x4015E


def attackers(config: RunConfig) -> frozenset[int]:
    """The hostile clients of the run, drawn from the seed alone."""
    count = round(config.simulation.attack.fraction * config.data.num_clients)
    if config.simulation.attack.kind == "none" or count == 0:
        return frozenset()
    rng = np.random.default_rng([config.seed, _ATTACKERS_TAG])
    return frozenset(int(c) for c in rng.choice(config.data.num_clients, size=count, replace=False))


def poison_labels(config: RunConfig, client_id: int, y: np.ndarray, num_classes: int) -> np.ndarray:
    """The labels a client trains on: flipped for a label-flipping attacker."""
    if config.simulation.attack.kind != "label_flip" or client_id not in attackers(config):
        return y
    return (num_classes - 1 - y).astype(y.dtype)


def poison_update(
    config: RunConfig, round_number: int, client_id: int, delta: np.ndarray
) -> np.ndarray:
    """The update a client sends: its honest delta, or what its attack makes of it."""
    if client_id not in attackers(config):
        return delta
    if config.simulation.attack.kind == "sign_flip":
        return (-config.simulation.attack.scale * delta).astype(wire.WIRE_DTYPE)
    if config.simulation.attack.kind == "scaling":
        return (config.simulation.attack.scale * delta).astype(wire.WIRE_DTYPE)
    if config.simulation.attack.kind == "gaussian_noise":
        rng = np.random.default_rng([config.seed, round_number, client_id, _NOISE_TAG])
        return rng.normal(0.0, config.simulation.attack.noise_std, delta.shape).astype(
            wire.WIRE_DTYPE
        )
    return delta  # label_flip poisons the data, not the update


def skips_client_steps(config: RunConfig, client_id: int) -> bool:
    """Does this client skip the honest client-side steps (clip, DP noise share) before
    masking? Attackers that craft their update do; a label flipper trains and sends
    honestly, so it does not."""
    return config.simulation.attack.kind not in ("none", "label_flip") and client_id in attackers(
        config
    )
