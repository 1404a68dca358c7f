"""Round health: what self-healing cost a round (tasks retried, clients lost, time lost),
and, per injected fault, how long the run took to recover from it.

Read from the attempt markers and fault events fedpipe.simulation.faults writes under
`fault_state_dir`, and from the round's aggregation outcome.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.config import RunConfig
from fedpipe.simulation import faults

LOST = "no update received"


@dataclasses.dataclass(frozen=True)
class RoundHealth:
    round_number: int
    tasks_retried: int  # tasks that needed more than one attempt
    failed_attempts: int
    clients_lost: int  # selected clients whose update never arrived
    time_lost_s: float  # from the first to the last attempt of each retried task, summed
    faults: list[str]  # "kind at site (outcome)" for each fault injected this round

    def metrics(self) -> dict[str, float]:
        return {
            "health/tasks_retried": self.tasks_retried,
            "health/failed_attempts": self.failed_attempts,
            "health/clients_lost": self.clients_lost,
            "health/time_lost_s": self.time_lost_s,
            "health/faults": len(self.faults),
        }

    def to_markdown(self, client_level: bool = True) -> str:
        """The health section of the round report; with client_level off (under DP) only
        the tasks' figures: no count of lost clients, no fault sites (an outage names its
        client)."""
        lost = f"clients lost {self.clients_lost}, " if client_level else ""
        lines = [
            "",
            "## Health",
            "",
            f"Tasks retried {self.tasks_retried} ({self.failed_attempts} failed attempts), "
            f"{lost}time lost {self.time_lost_s:.1f}s, {len(self.faults)} faults injected.",
        ]
        if client_level:
            lines += [f"- injected {f}" for f in self.faults]
        return "\n".join([*lines, ""])


def of_round(config: RunConfig, outcome: AggregationOutcome) -> RoundHealth:
    n = outcome.round_number
    started = faults.attempts(config, n)
    retried = {site: times for site, times in started.items() if len(times) > 1}
    return RoundHealth(
        round_number=n,
        tasks_retried=len(retried),
        failed_attempts=sum(len(t) - 1 for t in retried.values()),
        clients_lost=sum(1 for r in outcome.rejected if r.reason.startswith(LOST)),
        time_lost_s=sum(t[-1] - t[0] for t in retried.values()),
        faults=[
            f"{e['kind']} at {e['site']} ({e['outcome']})"
            for e in faults.events(config)
            if e["round"] == n
        ],
    )


def record_completed(config: RunConfig, round_number: int) -> None:
    """Mark the round complete (the end of the downtime of the faults before it)."""
    if config.simulation.faults.state_dir is None:
        return
    path = Path(config.simulation.faults.state_dir) / "completed.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"round": round_number, "time": time.time()}) + "\n")


def _completed(config: RunConfig) -> list[dict]:
    path = Path(config.simulation.faults.state_dir or "") / "completed.jsonl"
    if config.simulation.faults.state_dir is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def completions(config: RunConfig) -> list[int]:
    """The round of every completion, in order (a round redone after a crash twice)."""
    return [c["round"] for c in _completed(config)]


@dataclasses.dataclass(frozen=True)
class Recovery:
    round_number: int
    site: str
    kind: str
    recovery_s: float | None  # from the fault to the completion of its round (None: never)


def recoveries(config: RunConfig) -> list[Recovery]:
    """For each injected fault (its first attempt, when it fired on several), the time
    from the fault to the first completion of its round after it."""
    completed = _completed(config)
    found, seen = [], set()
    for e in faults.events(config):
        if (e["round"], e["site"], e["kind"]) in seen:
            continue
        seen.add((e["round"], e["site"], e["kind"]))
        done = [c["time"] for c in completed if c["round"] == e["round"] and c["time"] >= e["time"]]
        found.append(
            Recovery(e["round"], e["site"], e["kind"], min(done) - e["time"] if done else None)
        )
    return found
