"""Aggregation: screen the cohort's updates, check the quorum, combine what is left.

The aggregator sees a list of ClientUpdate. Today every update is a plain float32
delta; a masked (securely aggregated) update will be another `encoding` that only a
secure aggregator accepts, so the stage and its artifacts stay the same.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from fedpipe.aggregation import robust as robust_aggregation
from fedpipe.aggregation.screening import ScreeningFlag
from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.config import RunConfig


@dataclasses.dataclass(frozen=True)
class Rejection:
    client_id: int
    reason: str


class QuorumNotMet(RuntimeError):
    """Too few valid updates: the round fails and the previous global model stands."""

    def __init__(self, valid: int, required: int, cohort: int, rejections: list[Rejection]):
        self.valid, self.required, self.cohort = valid, required, cohort
        detail = "; ".join(f"client {r.client_id}: {r.reason}" for r in rejections) or "none"
        super().__init__(
            f"round needs at least {required} valid updates of a cohort of {cohort}, "
            f"got {valid} (rejected or missing: {detail})"
        )


class Aggregator(Protocol):
    """Combines validated client updates into one global delta."""

    def aggregate(self, updates: list[ClientUpdate]) -> np.ndarray: ...

    @classmethod
    def from_config(cls, config: RunConfig) -> Aggregator: ...


class WeightedFedAvg:
    """FedAvg (McMahan et al. 2017): the example-count-weighted mean of client deltas.
    It tolerates no Byzantine client: one update can move the mean anywhere."""

    @classmethod
    def from_config(cls, config: RunConfig) -> WeightedFedAvg:
        return cls()

    def aggregate(self, updates: list[ClientUpdate]) -> np.ndarray:
        # Sum in client order, so the result does not depend on the order shards arrive in.
        updates = sorted(updates, key=lambda u: u.client_id)
        weights = np.array([u.num_examples for u in updates], dtype=np.float64)
        total = np.zeros_like(updates[0].vector, dtype=np.float64)
        for w, u in zip(weights, updates, strict=True):
            total += w * u.vector
        return (total / weights.sum()).astype(wire.WIRE_DTYPE)


AGGREGATORS: dict[str, type[Aggregator]] = {
    "fedavg": WeightedFedAvg,
    "median": robust_aggregation.CoordinateMedian,
    "trimmed_mean": robust_aggregation.TrimmedMean,
    "krum": robust_aggregation.Krum,
    "multi_krum": robust_aggregation.MultiKrum,
    "norm_bounding": robust_aggregation.NormBounding,
}


def aggregator_for(config: RunConfig) -> Aggregator:
    """The aggregator the config names (config.AGGREGATORS lists the same names)."""
    return AGGREGATORS[config.aggregator].from_config(config)


def screen(
    updates: list[ClientUpdate], spec: wire.WeightsSpec
) -> tuple[list[ClientUpdate], list[Rejection]]:
    """Split updates into valid ones and rejections with the client id and the reason."""
    accepted, rejected = [], []
    for u in updates:
        try:
            if u.encoding != "float32":
                raise wire.UpdateRejected(
                    u.client_id, f"encoding {u.encoding!r} needs secure aggregation"
                )
            if u.num_examples <= 0:
                raise wire.UpdateRejected(
                    u.client_id, f"example count {u.num_examples} must be > 0"
                )
            wire.validate_update(u.client_id, u.vector, spec, u.checksum)
        except wire.UpdateRejected as e:
            rejected.append(Rejection(e.client_id, e.reason))
        else:
            accepted.append(u)
    return accepted, rejected


def require_quorum(
    accepted: list[ClientUpdate], rejections: list[Rejection], cohort: int, required: int
) -> None:
    if len(accepted) < required:
        raise QuorumNotMet(len(accepted), required, cohort, rejections)


@dataclasses.dataclass(frozen=True)
class ClientStats:
    client_id: int
    num_examples: int
    train_loss: float
    duration_s: float
    update_norm: float
    agreement: float | None = None  # cosine of the update with the round's aggregate


@dataclasses.dataclass(frozen=True)
class AggregationOutcome:
    """What aggregation did with the cohort's updates; evaluate and the report read it."""

    round_number: int
    cohort: list[int]
    accepted: list[ClientStats]
    rejected: list[Rejection]
    skipped: bool  # pass-through round after early stop
    started_at: float  # wall clock when the round began
    dp_clip_norm: float | None = None  # the DP clip norm of the round (None: DP off)
    dp_clipped: int = 0  # accepted updates whose norm exceeded it
    # Protocol figures when secure aggregation is on (secure_aggregation.ProtocolReport);
    # then the server knows neither example counts nor norms of single updates.
    secure_aggregation: dict | None = None
    flagged: list[ScreeningFlag] = dataclasses.field(default_factory=list)  # norm outliers

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> AggregationOutcome:
        raw = json.loads(Path(path).read_text())
        raw["accepted"] = [ClientStats(**c) for c in raw["accepted"]]
        raw["rejected"] = [Rejection(**r) for r in raw["rejected"]]
        raw["flagged"] = [ScreeningFlag(**f) for f in raw.get("flagged", [])]
        return cls(**raw)

    def to_markdown(self) -> str:
        lines = [f"# Round {self.round_number}: aggregation", ""]
        if self.skipped:
            return "\n".join([*lines, "Training stopped earlier: the model passed through.", ""])
        lines += [
            f"Cohort {len(self.cohort)} clients; {len(self.accepted)} updates accepted, "
            f"{len(self.rejected)} rejected or missing.",
            "",
        ]
        if self.dp_clip_norm is not None:
            lines += [
                f"DP: clip norm {self.dp_clip_norm:.4g}, {self.dp_clipped} updates clipped.",
                "",
            ]
        lines += [
            "| client | examples | train loss | update norm | seconds |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {c.client_id} | {c.num_examples} | {c.train_loss:.4f} | "
            f"{c.update_norm:.4f} | {c.duration_s:.2f} |"
            for c in self.accepted
        ]
        if self.rejected:
            lines += ["", "| rejected client | reason |", "|---:|---|"]
            lines += [f"| {r.client_id} | {r.reason} |" for r in self.rejected]
        if self.secure_aggregation:
            lines += ["", "| secure aggregation | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in sorted(self.secure_aggregation.items())]
        if self.flagged:
            lines += ["", "| flagged client | action | reason |", "|---:|---|---|"]
            lines += [f"| {f.client_id} | {f.action} | {f.reason} |" for f in self.flagged]
        return "\n".join(lines) + "\n"
