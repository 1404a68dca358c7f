"""User-level DP-FedAvg (McMahan et al., ICLR 2018) with fixed or adaptive clipping.

Every client update is clipped to L2 norm C, the clipped updates are summed with equal
weight, Gaussian noise of standard deviation z x C is added to the sum, and the sum is
divided by the expected cohort size (the fixed-denominator estimator of McMahan et al.
with uniform client weights: one client moves the mean by at most C / cohort_size, whatever
the others send). With adaptive clipping (Andrew et al., NeurIPS 2021) C follows a target
quantile of the update norms, estimated from a noised count of unclipped updates; the
clip norm is server state carried in the global model artifact.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.config import RunConfig
from fedpipe.privacy import accounting as privacy_accounting
from fedpipe.privacy import randomness

CLIP_NORM_STATE = "dp_clip_norm"


@dataclasses.dataclass(frozen=True)
class PrivateMean:
    delta: np.ndarray  # the noised mean update, float32
    clip_norm: float  # the clip norm this round used
    clipped: int  # updates whose norm exceeded it
    state: dict[str, np.ndarray]  # the DP part of the server state for the next round


def initial_state(config: RunConfig) -> dict[str, np.ndarray]:
    """Adaptive clipping starts from dp_clip_norm; fixed clipping keeps no state."""
    if config.dp_enabled and config.aggregation.dp.clipping == "adaptive":
        return {CLIP_NORM_STATE: np.array([config.aggregation.dp.clip_norm], np.float64)}
    return {}


def clip_norm(config: RunConfig, state: dict[str, np.ndarray]) -> float:
    """The clip norm of the coming round."""
    if CLIP_NORM_STATE in state:
        return float(state[CLIP_NORM_STATE][0])
    return float(config.aggregation.dp.clip_norm)


def clip(vector: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """The vector scaled down to L2 norm at most `bound`, and its original norm."""
    scaled = vector.astype(np.float64)
    norm = math.sqrt(float(scaled @ scaled))
    if norm > bound:
        scaled *= bound / norm
    return scaled, norm


def value_noise_multiplier(config: RunConfig) -> float:
    """Noise multiplier of the update sum. With adaptive clipping part of the budget goes to
    the count query, whose sensitivity is 1/2 (clipped_count_statistic), so its noise
    multiplier is 2 sigma_b and z_value = (z^-2 - (2 sigma_b)^-2)^-1/2 (Andrew et al. 2021,
    Thm 1): the two Gaussians together cost exactly one Gaussian of multiplier z."""
    z = config.aggregation.dp.noise_multiplier
    if config.aggregation.dp.clipping != "adaptive" or z == 0:
        return z
    sigma_b = privacy_accounting.count_noise_stddev(config)
    return (z**-2 - (2 * sigma_b) ** -2) ** -0.5


def noise_rng(config: RunConfig, round_number: int) -> np.random.Generator:
    """The central noise: from the OS's cryptographic source (seeded only in
    reproducible-simulation mode), so the noise cannot be regenerated and subtracted."""
    return randomness.for_config(config).generator("dp-noise", round_number)


def private_mean(
    config: RunConfig, updates: list[ClientUpdate], round_number: int, state: dict[str, np.ndarray]
) -> PrivateMean:
    """Clip, sum, noise and average the round's updates (the central, plain-path variant)."""
    bound = clip_norm(config, state)
    rng = noise_rng(config, round_number)
    total = np.zeros(updates[0].vector.size if updates else 0, np.float64)
    clipped = 0
    for u in sorted(updates, key=lambda u: u.client_id):
        vector, norm = clip(u.vector, bound)
        total += vector
        clipped += norm > bound
    total += rng.normal(0.0, value_noise_multiplier(config) * bound, total.size)
    mean = (total / config.selection.cohort_size).astype(wire.WIRE_DTYPE)
    new_state = {}
    if config.aggregation.dp.clipping == "adaptive":
        new_state[CLIP_NORM_STATE] = np.array(
            [adapted_clip_norm(config, bound, len(updates) - clipped, len(updates), rng)],
            np.float64,
        )
    return PrivateMean(mean, bound, clipped, new_state)


def clipped_count_statistic(unclipped: int, received: int) -> float:
    """The query adaptive clipping noises: sum over the received updates of (b_i - 1/2),
    b_i = 1 when update i is within the bound. Adding or removing one client moves it by
    exactly 1/2: the sensitivity the accountant's split of the noise assumes (the raw count
    of unclipped updates would have sensitivity 1, and twice the privacy cost)."""
    return unclipped - received / 2


def adapted_clip_norm(
    config: RunConfig, bound: float, unclipped: int, received: int, rng: np.random.Generator
) -> float:
    """Geometric update towards the target quantile from the noised centred count:
    C <- C exp(-eta (b - gamma)), b = (sum(b_i - 1/2) + N(0, sigma_b^2)) / cohort_size + 1/2
    (Andrew et al. 2021; TF Privacy's quantile estimator does the same)."""
    noise = rng.normal(0.0, privacy_accounting.count_noise_stddev(config))
    if config.aggregation.dp.noise_multiplier == 0:
        noise = 0.0  # no privacy claimed: use the exact count
    statistic = clipped_count_statistic(unclipped, received) + noise
    fraction = statistic / config.selection.cohort_size + 0.5
    return bound * math.exp(
        -config.aggregation.dp.clip_learning_rate
        * (fraction - config.aggregation.dp.target_quantile)
    )


def distributed_noise_share(
    config: RunConfig, client_id: int, round_number: int, size: int, bound: float, clients: int
) -> np.ndarray:
    """One client's share of the noise for the secure-aggregation path: N(0, (z C)^2 / n),
    so the sum of n shares carries the noise of the central mechanism and the server never
    sees an un-noised sum. The client adds it to its clipped update before masking."""
    rng = randomness.for_config(config).generator("dp-noise-share", round_number, client_id)
    return rng.normal(0.0, noise_share_stddev(config, bound, clients), size)


def noise_share_stddev(config: RunConfig, bound: float, clients: int) -> float:
    """Standard deviation of one client's noise share: z_value C / sqrt(clients)."""
    return value_noise_multiplier(config) * bound / math.sqrt(clients)


def privatize_for_secure_sum(
    config: RunConfig,
    client_id: int,
    round_number: int,
    delta: np.ndarray,
    bound: float,
    clients: int,
) -> np.ndarray:
    """What a client sends into secure aggregation with DP on: its update clipped to the
    round's clip norm plus its noise share. The unmasked sum divided by cohort_size is then
    distributed the same as private_mean's result."""
    clipped, _ = clip(delta, bound)
    share = distributed_noise_share(config, client_id, round_number, delta.size, bound, clients)
    return (clipped + share).astype(wire.WIRE_DTYPE)
