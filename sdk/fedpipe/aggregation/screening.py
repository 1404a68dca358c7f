"""Update screening: flag updates whose norm is an outlier relative to the cohort.

A scaled (model-replacement), sign-flipped-and-boosted or noise update is usually far
longer than honest ones. The yardstick is robust: the robust z-score of each norm against
the cohort's median and MAD (scaled by 1.4826 to match a standard deviation), so the
outliers themselves cannot stretch it. Policy `flag` only records, `downweight` shrinks
the update to the threshold norm, `exclude` drops it (recorded as a rejection).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedpipe.aggregation import vector_math
from fedpipe.aggregation.clipping import clip_to_norm
from fedpipe.aggregation.layer import Layer, RoundContext, Screened
from fedpipe.aggregation.outcome import Rejection, ScreeningFlag
from fedpipe.artifacts.updates import ClientUpdate

MAD_TO_STD = 1.4826
MIN_COHORT = 3  # below this a median and MAD say nothing about outliers


@dataclasses.dataclass(frozen=True)
class ScreeningResult:
    kept: list[ClientUpdate]  # what goes on to aggregation (downweighted ones shrunk)
    flags: list[ScreeningFlag]  # every outlier, whatever the policy did with it


_ACTIONS = {"flag": "flagged", "downweight": "downweighted", "exclude": "excluded"}


def screen_norms(updates: list[ClientUpdate], policy: str, threshold: float) -> ScreeningResult:
    """Apply the screening policy (off | flag | downweight | exclude) to the updates."""
    if policy == "off" or len(updates) < MIN_COHORT:
        return ScreeningResult(list(updates), [])
    norms = np.array([vector_math.l2_norm(u.vector) for u in updates])
    median = float(np.median(norms))
    # Identical norms give MAD 0: fall back to a tiny scale so only longer ones stand out.
    scale = max(MAD_TO_STD * float(np.median(np.abs(norms - median))), 1e-9 * max(median, 1.0))
    boundary = median + threshold * scale
    kept, flags = [], []
    for u, norm in zip(updates, norms, strict=True):
        z = (norm - median) / scale
        if z <= threshold:
            kept.append(u)
            continue
        action = _ACTIONS[policy]
        flags.append(
            ScreeningFlag(
                u.client_id,
                float(norm),
                float(z),
                action,
                f"update norm {norm:.4g} is {z:.1f} robust z-scores above the cohort median "
                f"{median:.4g} (threshold {threshold})",
            )
        )
        if action == "flagged":
            kept.append(u)
        elif action == "downweighted":
            kept.append(dataclasses.replace(u, vector=clip_to_norm(u.vector, boundary)))
    return ScreeningResult(kept, flags)


class NormScreening(Layer):
    """The screening policy as a layer of the chain; it needs each update's norm."""

    name = "screening"
    needs_individual_updates = True

    def __init__(self, policy: str, threshold: float) -> None:
        self.policy, self.threshold = policy, threshold

    def on_updates(self, updates: list[ClientUpdate], rnd: RoundContext) -> Screened:
        result = screen_norms(updates, self.policy, self.threshold)
        excluded = [
            Rejection(f.client_id, f.reason) for f in result.flags if f.action == "excluded"
        ]
        return Screened(result.kept, excluded, result.flags)
