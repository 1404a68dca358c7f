"""DP noise from the OS's cryptographic source: Gaussian, fresh per call unless keyed."""

import numpy as np
import pytest
from scipy import stats

from fedpipe.privacy import secure_noise


def test_draws_are_gaussian_with_the_asked_stddev():
    draws = secure_noise.gaussian(200_001, 2.5)
    assert draws.shape == (200_001,) and draws.dtype == np.float64
    assert np.mean(draws) == pytest.approx(0.0, abs=0.03)
    assert np.std(draws) == pytest.approx(2.5, rel=0.01)
    assert stats.kstest(draws / 2.5, "norm").pvalue > 1e-3
    # The cosine and sine halves are independent normals too.
    half = len(draws) // 2
    assert abs(stats.pearsonr(draws[:half], draws[half : 2 * half]).statistic) < 0.01


def test_every_call_draws_fresh_noise_and_a_key_reproduces_it():
    assert not np.array_equal(secure_noise.gaussian(1000, 1.0), secure_noise.gaussian(1000, 1.0))
    key = bytes(range(16))
    np.testing.assert_array_equal(
        secure_noise.gaussian(1001, 1.0, key), secure_noise.gaussian(1001, 1.0, key)
    )
    with pytest.raises(ValueError, match="16 bytes"):
        secure_noise.gaussian(10, 1.0, b"short")
