"""What aggregation did with a round's updates: accepted, rejected (with the reason) and
flagged clients, the chain's layer metrics, and the quorum rule that fails a round."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from fedpipe.artifacts.updates import ClientUpdate


@dataclasses.dataclass(frozen=True)
class Rejection:
    client_id: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ScreeningFlag:
    client_id: int
    update_norm: float
    robust_z: float
    action: str  # flagged | downweighted | excluded
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


def require_quorum(
    accepted: list[ClientUpdate], rejections: list[Rejection], cohort: int, required: int
) -> None:
    if len(accepted) < required:
        raise QuorumNotMet(len(accepted), required, cohort, rejections)


@dataclasses.dataclass(frozen=True)
class ClientStats:
    """One accepted client's figures. Under secure aggregation the server never sees a
    client's count, loss or update: num_examples is 0, train_loss and update_norm NaN."""

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
    # Every layer's report for the round (fedpipe.aggregation.chain), and under secure
    # aggregation the protocol's figures (secagg/*): logged as MLflow and KFP metrics by
    # evaluate, under these names, in simulate and in the pipeline alike.
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
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

    def without_clients(self, metrics: dict[str, float]) -> AggregationOutcome:
        """The outcome with no client named or counted and only the given metrics: what
        aggregate writes under DP (fedpipe.ops.release)."""
        return dataclasses.replace(
            self, cohort=[], accepted=[], rejected=[], flagged=[], metrics=dict(metrics)
        )

    def to_markdown(self, client_level: bool = True) -> str:
        """The round report; with client_level off (under DP, where the outcome carries
        only the released metrics: without_clients) no client and no count of clients."""
        lines = [f"# Round {self.round_number}: aggregation", ""]
        if self.skipped:
            return "\n".join([*lines, "Training stopped earlier: the model passed through.", ""])
        if client_level:
            lines += [
                f"Cohort {len(self.cohort)} clients; {len(self.accepted)} updates accepted, "
                f"{len(self.rejected)} rejected or missing.",
                "",
            ]
        else:
            lines += ["Client-level figures are withheld under DP.", ""]
        if self.metrics:
            lines += ["| aggregation metric | value |", "|---|---:|"]
            lines += [f"| {k} | {v:.6g} |" for k, v in sorted(self.metrics.items())]
            lines += [""]
        if not client_level:
            return "\n".join(lines) + "\n"
        lines += [
            "| client | examples | train loss | update norm | seconds |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {c.client_id} | {c.num_examples or 'masked'} | {_figure(c.train_loss)} | "
            f"{_figure(c.update_norm)} | {c.duration_s:.2f} |"
            for c in self.accepted
        ]
        if self.rejected:
            lines += ["", "| rejected client | reason |", "|---:|---|"]
            lines += [f"| {r.client_id} | {r.reason} |" for r in self.rejected]
        if self.flagged:
            lines += ["", "| flagged client | action | reason |", "|---:|---|---|"]
            lines += [f"| {f.client_id} | {f.action} | {f.reason} |" for f in self.flagged]
        return "\n".join(lines) + "\n"


def _figure(value: float) -> str:
    """A client's figure in the round report; NaN (masked under secure aggregation) as such."""
    return f"{value:.4f}" if math.isfinite(value) else "masked"
