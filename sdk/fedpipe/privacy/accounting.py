"""Privacy accounting of user-level DP-FedAvg with Google's dp-accounting library.

Each round is one sampled Gaussian mechanism: a cohort drawn from the clients with rate
q = cohort_size / num_clients, and Gaussian noise of noise_multiplier x clip norm on the
sum of clipped updates. Rounds compose; the RDP or PLD accountant turns the composition
into epsilon at the configured delta. With DP on, select draws the cohort by Poisson
sampling with rate q from secret randomness (fedpipe.privacy.cohort_sampling), so the
accounted mechanism is the one that runs.
With adaptive clipping each round is two Gaussian mechanisms on the same sample (the
clipped sum, multiplier z_value, and the centred clipped count, sensitivity 1/2, noise
sigma_b); their composition is exactly one Gaussian of multiplier z, which is what is
composed here (tests check it against dp-accounting composing the pair directly).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from fedpipe.config.errors import ConfigError

if TYPE_CHECKING:
    from fedpipe.config import RunConfig

# Selection policies under which every client is equally likely in every round,
# independently of its history: the sampled-Gaussian accounting assumes that.
SAMPLING_POLICIES = ("uniform",)


def sampling_rate(config: RunConfig) -> float:
    """The probability that a given client takes part in a round."""
    return config.selection.cohort_size / config.data.num_clients


def epsilon(config: RunConfig, rounds: int) -> float:
    """Epsilon at aggregation.dp.delta after `rounds` rounds (inf without noise, 0 before
    any)."""
    return _sampled_gaussian_epsilon(
        config, sampling_rate(config), config.aggregation.dp.noise_multiplier, rounds
    )


def local_epsilon(config: RunConfig, num_examples: int, participations: int) -> float | None:
    """Sample-level epsilon of DP-SGD for one silo after it trained in `participations`
    rounds: batch_size / num_examples sampling per step, local_epochs x ceil(n / B) steps
    per round (None when DP-SGD adds no noise). Batches are a shuffle, accounted as Poisson
    sampling with the same rate, the usual DP-SGD approximation."""
    if config.training.dp_sgd_clip_norm is None or config.training.dp_sgd_noise_multiplier == 0:
        return None
    rate = min(1.0, config.training.batch_size / num_examples)
    steps = (
        participations
        * config.training.local_epochs
        * math.ceil(num_examples / config.training.batch_size)
    )
    return _sampled_gaussian_epsilon(config, rate, config.training.dp_sgd_noise_multiplier, steps)


def _sampled_gaussian_epsilon(
    config: RunConfig, rate: float, noise_multiplier: float, count: int
) -> float:
    import dp_accounting

    if count <= 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    delta = config.aggregation.dp.delta
    # The RDP accountant warns (via absl) for each fractional order it cannot evaluate at
    # small noise; it drops those orders, which only loosens the bound. Keep logs readable.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        if config.aggregation.dp.accountant == "rdp":
            orders, per_step = _rdp_per_step(rate, noise_multiplier)
            return float(dp_accounting.rdp.compute_epsilon(orders, count * per_step, delta)[0])
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                rate, dp_accounting.GaussianDpEvent(noise_multiplier)
            ),
            count,
        )
        return float(dp_accounting.pld.PLDAccountant().compose(event).get_epsilon(delta))
    finally:
        absl_logger.setLevel(level)


@functools.lru_cache(maxsize=32)
def _rdp_per_step(rate: float, noise_multiplier: float) -> tuple[np.ndarray, np.ndarray]:
    """RDP of one sampled-Gaussian step at the accountant's default orders. It is most of
    an epsilon's cost (~0.3 s of special functions per order set), and a run asks for
    epsilon after every round with the same q and z: rounds compose by multiplying this
    vector by the count, exactly what RdpAccountant.compose of a self-composed event
    does, so the cached path gives the same epsilon bit for bit."""
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    )
    # dp-accounting (pinned) keeps the composed RDP vector in `_rdp`; it has no getter.
    per_step = accountant._rdp.copy()  # noqa: SLF001
    per_step.setflags(write=False)
    return accountant._orders, per_step  # noqa: SLF001


def reported_epsilon(config: RunConfig, rounds: int) -> float | None:
    """The epsilon to log and tag after `rounds` rounds; None when no DP noise is added."""
    if not config.dp_enabled or config.aggregation.dp.noise_multiplier == 0:
        return None
    return epsilon(config, rounds)


def exceeds_budget(config: RunConfig, rounds: int) -> bool:
    """Would training `rounds` rounds in total spend more than target_epsilon?"""
    return (
        config.aggregation.dp.target_epsilon is not None
        and epsilon(config, rounds) > config.aggregation.dp.target_epsilon
    )


def check_config(config: RunConfig) -> None:
    """Refuse a DP config that the accountant cannot stand behind (ConfigError)."""
    if config.selection.policy not in SAMPLING_POLICIES:
        raise ConfigError(
            "selection.policy",
            config.selection.policy,
            f"one of {', '.join(SAMPLING_POLICIES)} when DP is on: the accountant assumes "
            "every client is equally likely in every round",
        )
    if config.selection.probation_failures > 0:
        raise ConfigError(
            "selection.probation_failures",
            config.selection.probation_failures,
            "0 when DP is on: probation removes clients from the candidates, which raises "
            "everyone else's sampling rate above cohort_size / num_clients "
            f"= {sampling_rate(config):.3g}, the rate the accountant composes",
        )
    if config.aggregation.dp.delta >= 1 / config.data.num_clients:
        raise ConfigError(
            "aggregation.dp.delta",
            config.aggregation.dp.delta,
            f"< 1 / data.num_clients = {1 / config.data.num_clients:.3g}",
        )
    if (
        config.aggregation.dp.target_epsilon is not None
        and config.aggregation.dp.noise_multiplier <= 0
    ):
        raise ConfigError(
            "aggregation.dp.noise_multiplier",
            config.aggregation.dp.noise_multiplier,
            "a number > 0 when target_epsilon is set (without noise epsilon is infinite)",
        )
    if config.aggregation.dp.clipping == "adaptive" and config.aggregation.dp.noise_multiplier > 0:
        count_stddev = count_noise_stddev(config)
        if 2 * count_stddev <= config.aggregation.dp.noise_multiplier:
            raise ConfigError(
                "aggregation.dp.clip_count_stddev",
                count_stddev,
                f"> noise_multiplier / 2 = {config.aggregation.dp.noise_multiplier / 2:g}, so that "
                "the "
                "clipped-count query leaves some of the budget to the updates",
            )
    if config.aggregation.dp.target_epsilon is not None and exceeds_budget(config, 1):
        raise ConfigError(
            "aggregation.dp.target_epsilon",
            config.aggregation.dp.target_epsilon,
            f">= {epsilon(config, 1):.4g}, the epsilon of a single round of this config",
        )


def count_noise_stddev(config: RunConfig) -> float:
    """Noise on the clipped-update count of adaptive clipping (default cohort_size / 20,
    Andrew et al. 2021)."""
    return config.aggregation.dp.clip_count_stddev or config.selection.cohort_size / 20
