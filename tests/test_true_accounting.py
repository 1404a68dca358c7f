"""The epsilon fedpipe reports is the epsilon of the mechanism that runs: adaptive
clipping's count query, DP with probation, the SecAgg coordinate bound, the sampling."""

import logging
import math

import numpy as np
import pytest

from fedpipe import config, preflight
from fedpipe.privacy import accounting, cohort_sampling, dp_fedavg, randomness
from fedpipe.secagg import NonFiniteUpdate
from fedpipe.secagg import encoding as secagg_encoding
from tests.dp_chain import dp_layer, secure_client_part


def _adaptive() -> config.RunConfig:
    return config.from_mapping(
        {
            "data.num_clients": 1000,
            "selection.cohort_size": 100,
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.noise_multiplier": 1.0,
            "aggregation.dp.clipping": "adaptive",
            "aggregation.dp.clip_count_stddev": 0.6,
            "aggregation.dp.delta": 1e-5,
        }
    )


def _direct_epsilon(q: float, multipliers: list[float], rounds: int, delta: float) -> float:
    """dp-accounting composing, per round, the Gaussian mechanisms on one Poisson sample."""
    import dp_accounting

    logging.getLogger("absl").setLevel(logging.ERROR)
    inner = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in multipliers])
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, inner), rounds)
    return dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta)


def test_adaptive_clipping_epsilon_matches_dp_accounting_composing_both_queries():
    cfg = _adaptive()
    sigma_b = accounting.count_noise_stddev(cfg)
    z_value = dp_layer(cfg).value_noise_multiplier
    # The count query has sensitivity 1/2, so its noise multiplier is sigma_b / (1/2).
    direct = _direct_epsilon(0.1, [z_value, 2 * sigma_b], 100, 1e-5)
    assert accounting.epsilon(cfg, 100) == pytest.approx(direct, rel=1e-3)
    # Had the raw count (sensitivity 1) been noised, the same noise would cost far more:
    # the under-accounting found on main (about 26 where 7.9 was reported).
    raw = _direct_epsilon(0.1, [z_value, sigma_b], 100, 1e-5)
    assert raw > 3 * accounting.epsilon(cfg, 100)


def test_the_noised_count_statistic_moves_by_half_when_one_client_joins_or_leaves():
    rng = np.random.default_rng(0)
    for _ in range(200):
        norms = rng.uniform(0, 2, size=int(rng.integers(1, 50)))
        bound = 1.0
        unclipped = int((norms <= bound).sum())
        full = dp_fedavg.clipped_count_statistic(unclipped, len(norms))
        without = dp_fedavg.clipped_count_statistic(
            unclipped - int(norms[0] <= bound), len(norms) - 1
        )
        assert abs(full - without) == 0.5


def test_dp_with_probation_is_refused_with_the_sampling_rate():
    with pytest.raises(config.ConfigError) as error:
        preflight.check(
            config.from_mapping(
                {
                    "data.num_clients": 100,
                    "selection.cohort_size": 10,
                    "aggregation.dp.clip_norm": 1.0,
                    "aggregation.dp.noise_multiplier": 1.0,
                    "aggregation.dp.delta": 1e-3,
                    "selection.probation_failures": 2,
                }
            )
        )
    assert error.value.field == "selection.probation_failures"
    assert "sampling rate above cohort_size / num_clients = 0.1" in str(error.value)


def test_the_secagg_coordinate_bound_does_not_cut_the_noise():
    """z = 2, C = 1, 4 clients each adding N(0, 1) per coordinate with secagg_clip = 1: on
    main the coordinate clip after the noise left a sum noise std of 1.53 (2.0 required)."""
    cfg = config.from_mapping(
        {
            "data.num_clients": 4,
            "selection.cohort_size": 4,
            "aggregation.quorum": 1.0,
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.noise_multiplier": 2.0,
            "aggregation.dp.delta": 1e-3,
            "aggregation.secure.mode": "secagg",
            "aggregation.secure.clip": 1.0,
        }
    )
    encoding = secagg_encoding.encoding_for(cfg, 4)
    assert encoding.bound == pytest.approx(1.0 + secagg_encoding.TAIL_SIGMAS * 1.0)
    size = 50_000
    total = sum(
        encoding.encode(
            np.zeros(size),
            cfg.aggregation.secure.max_examples,
            lambda d, k=k: secure_client_part(cfg, k, 1, d),
        )
        for k in range(4)
    )
    mean, weight = encoding.decode_mean(total)
    noise_on_sum = mean.astype(np.float64) * 4
    assert weight == 4 * cfg.aggregation.secure.max_examples
    assert noise_on_sum.std() == pytest.approx(2.0, rel=0.03)


def test_a_nan_update_is_refused_before_secure_aggregation_encodes_it():
    cfg = config.from_mapping(
        {"data.num_clients": 4, "selection.cohort_size": 4, "aggregation.secure.mode": "secagg"}
    )
    encoding = secagg_encoding.encoding_for(cfg, 4)
    bad = np.zeros(10)
    bad[3] = np.nan
    with pytest.raises(NonFiniteUpdate, match="1 non-finite values"):
        encoding.encode(bad, 10)
    with pytest.raises(NonFiniteUpdate, match="after the client's transform"):
        encoding.encode(np.zeros(10), 10, lambda d: d + np.inf)


def test_cohorts_under_dp_are_secret_poisson_samples_at_the_accounted_rate():
    cfg = config.from_mapping(
        {
            "data.num_clients": 200,
            "selection.cohort_size": 20,
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.delta": 1e-3,
        }
    )
    q = accounting.sampling_rate(cfg)
    source = randomness.for_config(cfg)
    sizes, member = [], 0
    for r in range(400):
        cohort = cohort_sampling.poisson_cohort(list(range(200)), q, source.generator("c", r))
        sizes.append(len(cohort))
        member += 7 in cohort
    assert np.mean(sizes) == pytest.approx(20, rel=0.05)
    assert np.std(sizes) == pytest.approx(math.sqrt(200 * q * (1 - q)), rel=0.2)
    assert member / 400 == pytest.approx(q, abs=0.05)
    # The same seed and round draw another cohort (nobody can predict it from the seed).
    again = [cohort_sampling.poisson_cohort(list(range(200)), q, source.generator("c", 0))]
    first = cohort_sampling.poisson_cohort(list(range(200)), q, source.generator("c", 0))
    assert again[0] != first
