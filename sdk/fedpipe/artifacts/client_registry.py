"""The client registry: each client's history, carried from round to round as an artifact.

Selection policies read it, evaluate writes it. It also records whether the run reached
its target accuracy, which turns the remaining rounds into pass-throughs.

Under DP the registry is released like any KFP artifact, and the next round needs no
history (only uniform Poisson sampling is allowed), so it holds no client-level data:
each record is the bare client id of the population (`data.num_clients`, public), and
only the round counters and stop flags change (`client_level` is False).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

RELIABILITY_MEMORY = 0.7  # weight of the past in the reliability score


@dataclasses.dataclass
class ClientRecord:
    client_id: int
    num_examples: int | None = None  # None under DP: the registry holds only the id
    label_histogram: list[int] | None = None
    participation: int = 0
    failures: int = 0
    last_round: int | None = None
    last_train_loss: float | None = None
    last_duration_s: float | None = None
    # History that adaptive selection and weighting read (fedpipe.clients.history writes it).
    timeouts: int = 0  # rounds dropped for missing the deadline (also counted in failures)
    last_simulated_duration_s: float | None = None
    last_update_norm: float | None = None
    agreement: float | None = None  # running cosine of the update with the aggregate
    total_reward: float = 0.0  # held-out improvement credited to the client so far
    flags: int = 0  # rounds in which screening flagged this client's update
    reliability: float = 1.0  # 1 = never flagged; falls with each flag, recovers slowly
    consecutive_failures: int = 0  # rounds in a row without an accepted update (probation)
    last_failure_round: int | None = None

    def record_screening(self, flagged: bool) -> None:
        """Fold one screened update into the reliability score (an exponential average of
        'not flagged'), so a client flagged again and again ends near 0."""
        self.flags += int(flagged)
        self.reliability = RELIABILITY_MEMORY * self.reliability + (1 - RELIABILITY_MEMORY) * (
            0.0 if flagged else 1.0
        )


@dataclasses.dataclass
class ClientRegistry:
    clients: list[ClientRecord]
    client_level: bool = True  # False under DP: bare ids, no history (module docstring)
    completed_rounds: int = 0
    target_reached_at: int | None = None
    privacy_budget_reached_at: int | None = None  # the last round within target_epsilon
    last_accuracy: float | None = None  # held-out accuracy of the current global model
    simulated_time_s: float = 0.0  # simulated wall clock of the rounds so far
    policy_state: dict = dataclasses.field(default_factory=dict)  # learned selection state

    @classmethod
    def initial(cls, histograms: list[list[int]], client_level: bool) -> ClientRegistry:
        """The registry before round 1: each client's size and label histogram, or (not
        client_level, under DP) only its id."""
        if not client_level:
            return cls([ClientRecord(i) for i in range(len(histograms))], client_level=False)
        return cls([ClientRecord(i, sum(h), h) for i, h in enumerate(histograms)])

    @property
    def stopped(self) -> bool:
        return self.target_reached_at is not None or self.privacy_budget_reached_at is not None

    @property
    def stop_reason(self) -> str:
        if self.target_reached_at is not None:
            return f"target accuracy reached in round {self.target_reached_at}"
        if self.privacy_budget_reached_at is not None:
            return (
                f"privacy budget: another round after round {self.privacy_budget_reached_at} "
                "would exceed target_epsilon"
            )
        return "not stopped"

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> ClientRegistry:
        raw = json.loads(Path(path).read_text())
        clients = [ClientRecord(**c) for c in raw.pop("clients")]
        return cls(clients=clients, **raw)
