"""t-out-of-n Shamir secret sharing over the prime field GF(2^521 - 1).

The secrets are 32-byte keys and seeds, so a Mersenne prime above 2^256 holds any of
them as one field element; any t shares give the secret back and t - 1 shares say
nothing about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

PRIME = 2**521 - 1
SHARE_BYTES = 66  # a field element fits in 521 bits
_COEFFICIENT_BYTES = 80  # 640 random bits per coefficient: negligible bias mod PRIME


def split(
    secret: int, threshold: int, xs: Iterable[int], random_bytes: Callable[[int], bytes]
) -> dict[int, int]:
    """Shares {x: f(x)} of `secret` for the points `xs` (non-zero, distinct), where f has
    degree threshold - 1, f(0) = secret, and random coefficients from `random_bytes`."""
    xs = list(xs)
    if not 0 <= secret < PRIME:
        raise ValueError("the secret must be a field element in [0, PRIME)")
    if threshold < 1 or threshold > len(xs):
        raise ValueError(f"threshold {threshold} must be in [1, {len(xs)}] (number of shares)")
    if len(set(xs)) != len(xs) or any(x % PRIME == 0 for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    coefficients = [secret] + [
        int.from_bytes(random_bytes(_COEFFICIENT_BYTES), "big") % PRIME
        for _ in range(threshold - 1)
    ]
    shares = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = y
    return shares


def reconstruct(shares: Mapping[int, int], threshold: int) -> int:
    """The secret from any `threshold` of its shares (Lagrange interpolation at 0). The
    basis polynomials' products are taken in plain integers and reduced once: share points
    are small (client index + 1), so that is about half the time of reducing every step,
    and the server reconstructs one secret per client of the cohort."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot recover a {threshold}-of-n secret")
    points = sorted(shares.items())[:threshold]
    secret = 0
    for xi, yi in points:
        numerator, denominator = 1, 1  # l_i(0) = prod x_j / prod (x_j - x_i), j != i
        for xj, _ in points:
            if xj != xi:
                numerator *= xj
                denominator *= xj - xi
        secret += yi * numerator * pow(denominator, -1, PRIME)
    return secret % PRIME
