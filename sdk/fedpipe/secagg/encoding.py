"""The fixed-point encoding a round's config implies: the coordinate clip, the precision,
the example-count bound, how many vectors may be summed, room for DP noise shares, and
whether the clients' losses ride in the sum (not under DP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedpipe.privacy.dp_fedavg import DpFedAvg
from fedpipe.secagg.quantization import FixedPoint

if TYPE_CHECKING:
    from fedpipe.config import RunConfig

# Each client's noise share is cut at this many standard deviations (its fixed-point range
# is sized for clip + TAIL_SIGMAS sigma): the chance that any coordinate of any client
# reaches the cut is below d * n * 2 Phi(-8) ~ d * n * 1.2e-15, added to delta.
TAIL_SIGMAS = 8.0


def encoding_for(config: RunConfig, cohort_size: int) -> FixedPoint:
    """The fixed-point encoding of a round. Under DP each client's noise share rides in the
    encoded value, so the range per coordinate is clip + TAIL_SIGMAS x its noise stddev:
    the coordinate clip comes before the noise and cannot cut it."""
    noise = 0.0
    if config.dp_enabled and config.aggregation.dp.noise_multiplier > 0:
        dp = DpFedAvg.from_config(config)
        noise = dp.noise_share_stddev(dp.clip_norm({}))
    return FixedPoint(
        config.aggregation.secure.clip,
        config.aggregation.secure.fractional_bits,
        config.aggregation.secure.max_examples,
        cohort_size,
        noise_bound=TAIL_SIGMAS * noise,
        carries_loss=not config.dp_enabled,
    )
