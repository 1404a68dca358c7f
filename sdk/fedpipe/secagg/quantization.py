"""Fixed-point encoding of clipped, example-weighted updates in Z_{2^b}.

A client sends (n_i / M) * clip(delta_i) in fixed point, then its weighted training loss,
then its example count n_i, all in one vector of machine words, so the server can divide
the sums and get weighted FedAvg and the cohort's weighted mean loss (and no client's).
M (`max_examples`) is a public bound on n_i: scaling by it keeps every summand inside
[-c, c], so the bits the sum needs depend only on the cohort size, the clip and
the precision, never on how many examples a client has. b is chosen so that the sum of
the whole cohort cannot wrap; the words are uint32 when b <= 32 and uint64 otherwise, and
all arithmetic is modulo 2^word_bits (uniform masks there hide any b-bit sum).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from fedpipe.artifacts import wire

# The DP hook: what a client applies to its clipped update before quantization (for
# example its share of the noise of distributed DP). The identity when DP is off.
UpdateTransform = Callable[[np.ndarray], np.ndarray]


class NonFiniteUpdate(ValueError):
    """An update with NaN or Inf values: refused before encoding (a client withholds it)."""


def no_transform(update: np.ndarray) -> np.ndarray:
    return update


# After the delta's coordinates: the weighted loss, then the weight.
TRAILING_WORDS = 2
# A client's training loss is cut to [0, LOSS_RANGE] and sent as a coordinate in [0, clip],
# so it needs no more bits than the delta. A cross-entropy above it (Keras cuts
# probabilities at 1e-7, so at most 16.1) is not a model learning; it counts as the top.
LOSS_RANGE = 32.0


@dataclasses.dataclass(frozen=True)
class FixedPoint:
    clip: float  # each coordinate of a delta is clipped to [-clip, clip]
    fractional_bits: int  # quantization step 2^-fractional_bits
    max_examples: int  # public bound M on a client's example count (larger counts saturate)
    cohort_size: int  # how many vectors may be summed
    # Room per coordinate for what the transform adds after the clip (a client's DP noise
    # share, sized as k sigma): a summand lies in [-(clip + noise_bound), clip + noise_bound].
    noise_bound: float = 0.0
    # Do clients put their loss in the sum? Not under DP: that mean would be un-noised.
    carries_loss: bool = True

    @property
    def bound(self) -> float:
        """The largest magnitude of one coordinate of a (weighted) summand."""
        return self.clip + self.noise_bound

    @property
    def scale(self) -> float:
        return float(2**self.fractional_bits)

    @property
    def bits(self) -> int:
        """b: bits the cohort's sum needs, sign included, so that it never wraps."""
        largest = max(
            self.cohort_size * math.ceil(self.bound * self.scale),
            self.cohort_size * self.max_examples,
        )
        return largest.bit_length() + 1

    @property
    def word(self) -> np.dtype:
        if self.bits > 64:
            raise ValueError(f"the sum needs {self.bits} bits; lower the clip or precision")
        return np.dtype(np.uint32 if self.bits <= 32 else np.uint64)

    def encode(
        self,
        delta: np.ndarray,
        weight: int,
        transform: UpdateTransform = no_transform,
        loss: float = 0.0,
        rounding: Callable[[np.ndarray], np.ndarray] = np.rint,
    ) -> np.ndarray:
        """The words a client masks: its clipped, weighted delta, its weighted training loss
        (0 unless `carries_loss`; a non-finite loss counts as LOSS_RANGE), then its weight.
        The weight is in units of 1/max_examples: the example count under FedAvg, an
        announced share of max_examples under adaptive weights, max_examples for DP's equal
        weights. Coordinates are clipped to [-clip, clip] *before* the transform (which may
        add DP noise), and the result only to the wider [-bound, bound] that the word size
        was chosen for, so the noise is not cut; `rounding` puts them on the grid (nearest,
        or compression's unbiased stochastic rounding). Non-finite values are refused: a
        NaN would otherwise encode silently as some integer."""
        delta = np.asarray(delta, dtype=np.float64)
        if not np.isfinite(delta).all():
            bad = int((~np.isfinite(delta)).sum())
            raise NonFiniteUpdate(
                f"{bad} non-finite values: update withheld from secure aggregation"
            )
        weight = min(weight, self.max_examples)
        clipped = transform(np.clip(delta, -self.clip, self.clip)).astype(np.float64)
        if not np.isfinite(clipped).all():
            raise NonFiniteUpdate("non-finite values after the client's transform: update withheld")
        clipped = np.clip(clipped, -self.bound, self.bound)  # the range the word was sized for
        share = weight / self.max_examples
        fixed = rounding(clipped * share * self.scale).astype(np.int64)
        loss_word = 0
        if self.carries_loss:
            cut = min(loss, LOSS_RANGE) if math.isfinite(loss) else LOSS_RANGE
            loss_word = round(max(cut, 0.0) / LOSS_RANGE * self.clip * share * self.scale)
        return np.append(fixed, np.int64([loss_word, weight])).astype(self.word)

    def decode_mean(self, summed: np.ndarray) -> tuple[np.ndarray, int]:
        """The weighted mean delta and the total weight, from the sum of the cohort's
        encoded vectors (mod 2^word_bits)."""
        signed, total = self._signed_total(summed)
        mean = signed[:-TRAILING_WORDS].astype(np.float64) / self.scale
        return (mean * (self.max_examples / total)).astype(wire.WIRE_DTYPE), total

    def decode_loss(self, summed: np.ndarray) -> float | None:
        """The cohort's weighted mean training loss from the same sum (None when the
        clients do not put it in: under DP)."""
        if not self.carries_loss:
            return None
        signed, total = self._signed_total(summed)
        loss_sum = int(signed[-2]) / self.scale / self.clip * LOSS_RANGE  # the loss word
        return loss_sum * self.max_examples / total

    def _signed_total(self, summed: np.ndarray) -> tuple[np.ndarray, int]:
        signed = summed.view(np.int32 if self.word == np.uint32 else np.int64)
        total = int(signed[-1])
        if total <= 0:
            raise ValueError(f"summed weight {total} must be > 0")
        return signed, total
