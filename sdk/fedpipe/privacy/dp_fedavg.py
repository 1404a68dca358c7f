"""User-level DP-FedAvg (McMahan et al., ICLR 2018) with fixed or adaptive clipping, as a
layer of the aggregation chain.

Every client update is clipped to L2 norm C, the clipped updates are summed with equal
weight, Gaussian noise of standard deviation z x C is added to the sum, and the sum is
divided by the expected cohort size (the fixed-denominator estimator of McMahan et al.
with uniform client weights: one client moves the mean by at most C / cohort_size, whatever
the others send). With adaptive clipping (Andrew et al., NeurIPS 2021) C follows a target
quantile of the update norms, estimated from a noised count of unclipped updates; the
clip norm is server state carried in the global model artifact.

On the plain path the server clips and adds the noise (central DP). Under secure
aggregation each client clips and adds its share N(0, (zC)^2 / m) of the noise before
masking (distributed DP, m = the quorum), so the server never sees an un-noised sum.
Every noise draw comes from the OS's cryptographic source (fedpipe.privacy.randomness;
seeded only in the reproducible-simulation research mode), so it cannot be regenerated
and subtracted.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedpipe.aggregation.clipping import clip_factor, clip_l2
from fedpipe.aggregation.layer import (
    Aggregate,
    ClientContext,
    RoundContext,
    Screened,
    State,
    Weighting,
)
from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.config.sections import DpConfig
from fedpipe.privacy import accounting, randomness

if TYPE_CHECKING:
    from fedpipe.config import RunConfig

CLIP_NORM_STATE = "dp_clip_norm"


def value_noise_multiplier(dp: DpConfig, count_stddev: float) -> float:
    """Noise multiplier of the update sum. With adaptive clipping part of the budget goes to
    the count query, whose sensitivity is 1/2 (clipped_count_statistic), so its noise
    multiplier is 2 sigma_b and z_value = (z^-2 - (2 sigma_b)^-2)^-1/2 (Andrew et al. 2021,
    Thm 1): the two Gaussians together cost exactly one Gaussian of multiplier z."""
    z = dp.noise_multiplier
    if dp.clipping != "adaptive" or z == 0:
        return z
    return (z**-2 - (2 * count_stddev) ** -2) ** -0.5


def clipped_count_statistic(unclipped: int, received: int) -> float:
    """The query adaptive clipping noises: sum over the received updates of (b_i - 1/2),
    b_i = 1 when update i is within the bound. Adding or removing one client moves it by
    exactly 1/2: the sensitivity the accountant's split of the noise assumes (the raw count
    of unclipped updates would have sensitivity 1, and twice the privacy cost)."""
    return unclipped - received / 2


@dataclasses.dataclass
class DpFedAvg(Weighting):
    """DP-FedAvg: clip, equal weights, Gaussian noise on the sum, fixed denominator."""

    dp: DpConfig
    cohort_size: int
    quorum_clients: int  # m: the fewest clients whose noise shares reach the sum
    count_stddev: float
    noise_source: randomness.Randomness
    epsilon_after: Callable[[int], float | None]  # epsilon spent once n rounds have run
    name: str = "dp_fedavg"
    _round: int = 0
    _clipped: int = 0
    _kept: int = 0
    _bound: float = 0.0
    _factors: dict[int, float] = dataclasses.field(default_factory=dict)  # clip, by client

    @classmethod
    def from_config(cls, config: RunConfig) -> DpFedAvg:
        """The layer, after refusing a config the accountant cannot stand behind."""
        accounting.check_config(config)
        return cls(
            config.aggregation.dp,
            config.selection.cohort_size,
            config.min_valid_updates,
            accounting.count_noise_stddev(config),
            randomness.for_config(config),
            # report() runs twice per round (as a layer and as the weighting): one accountant call
            functools.lru_cache(maxsize=2)(functools.partial(accounting.reported_epsilon, config)),
        )

    def initial_state(self, size: int) -> State:
        if self.dp.clipping == "adaptive":
            return {CLIP_NORM_STATE: np.array([self.dp.clip_norm], np.float64)}
        return {}

    def clip_norm(self, state: Mapping[str, np.ndarray]) -> float:
        """The clip norm of the coming round."""
        if CLIP_NORM_STATE in state:
            return float(state[CLIP_NORM_STATE][0])
        return float(self.dp.clip_norm)

    @property
    def value_noise_multiplier(self) -> float:
        return value_noise_multiplier(self.dp, self.count_stddev)

    def noise_share_stddev(self, bound: float) -> float:
        """Standard deviation of one client's noise share: z_value C / sqrt(m)."""
        return self.value_noise_multiplier * bound / math.sqrt(self.quorum_clients)

    def client(self, delta: np.ndarray, ctx: ClientContext) -> np.ndarray:
        if not ctx.secure:  # the server clips and noises on the plain path
            return delta
        bound = self.clip_norm(ctx.state)
        clipped, _ = clip_l2(delta, bound)
        rng = self.noise_source.generator("dp-noise-share", ctx.round_number, ctx.client_id)
        share = rng.normal(0.0, self.noise_share_stddev(bound), delta.size)
        return (clipped + share).astype(wire.WIRE_DTYPE)

    def client_weight(self, ctx: ClientContext) -> float:
        return 1.0

    def weights(self, updates: list[ClientUpdate], rnd: RoundContext) -> np.ndarray:
        """Equal weights times each update's clip factor (`on_updates`): the mean's sum
        w_i x_i is then exactly the sum of the clipped updates."""
        return np.array([self._factors[u.client_id] for u in updates])

    def divisor(self, aggregate: Aggregate, rnd: RoundContext) -> float:
        return float(self.cohort_size)

    def on_updates(self, updates: list[ClientUpdate], rnd: RoundContext) -> Screened:
        """Clip each update to the round's clip norm C. The clipped update is factor x
        vector, with factor = min(1, C / norm); the factor goes to the mean as the update's
        weight (this layer is the chain's weighting, the last layer before the mean), so
        the server holds no float64 copy of every update (float64(x) x factor is what the
        copy held, so the sum is the same to the bit)."""
        self._bound = self.clip_norm(rnd.state)
        self._factors, self._clipped = {}, 0
        scratch = np.empty(updates[0].vector.size, np.float64) if updates else None
        for u in updates:
            factor, norm = clip_factor(u.vector, self._bound, scratch)
            self._clipped += norm > self._bound
            self._factors[u.client_id] = factor
        self._kept = len(updates)
        return Screened(list(updates))

    def on_aggregate(self, aggregate: Aggregate, rnd: RoundContext) -> Aggregate:
        self._bound, self._round = self.clip_norm(rnd.state), rnd.round_number
        # Under secure aggregation the sum holds the shares of its k contributors, k / m of
        # the noise; a Poisson cohort sampled below m (or empty) gets the rest from here.
        share = 1.0
        if rnd.secure:
            share = max(0, self.quorum_clients - aggregate.contributors) / self.quorum_clients
        if share > 0:
            rng = self.noise_source.generator("dp-noise", rnd.round_number)
            stddev = self.value_noise_multiplier * self._bound * math.sqrt(share)
            aggregate.total += rng.normal(0.0, stddev, aggregate.total.size)  # in place: no copy
            self._rng = rng
        return aggregate

    def next_state(self, rnd: RoundContext) -> State:
        if self.dp.clipping != "adaptive":
            return {}
        return {
            CLIP_NORM_STATE: np.array(
                [self._adapted_clip_norm(self._kept - self._clipped, self._kept, self._rng)],
                np.float64,
            )
        }

    def _adapted_clip_norm(self, unclipped: int, received: int, rng: np.random.Generator) -> float:
        """Geometric update towards the target quantile from the noised centred count:
        C <- C exp(-eta (b - gamma)), b = (sum(b_i - 1/2) + N(0, sigma_b^2)) / cohort_size + 1/2
        (Andrew et al. 2021; TF Privacy's quantile estimator does the same)."""
        noise = rng.normal(0.0, self.count_stddev)
        if self.dp.noise_multiplier == 0:
            noise = 0.0  # no privacy claimed: use the exact count
        statistic = clipped_count_statistic(unclipped, received) + noise
        fraction = statistic / self.cohort_size + 0.5
        return self._bound * math.exp(
            -self.dp.clip_learning_rate * (fraction - self.dp.target_quantile)
        )

    def report(self) -> dict[str, float]:
        """The clip norm and the budget spent: never a count or norm of single clients."""
        metrics = {"dp_clip_norm": self._bound}
        spent = self.epsilon_after(self._round)
        if spent is not None:
            metrics["epsilon"] = spent
        return metrics
