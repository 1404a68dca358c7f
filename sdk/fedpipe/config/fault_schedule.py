"""The grammar of `simulation.faults.schedule` entries: `kind@round[-round][:target]`."""

from __future__ import annotations

import dataclasses

CRASH, HANG, CORRUPT, OUTAGE = "crash", "hang", "corrupt", "outage"
CRASH_ALWAYS = "crash_always"  # a task that fails on every attempt (a broken node)
AGGREGATE_CRASH, PIPELINE_CRASH = "aggregate_crash", "pipeline_crash"
TASK_KINDS = (CRASH, HANG, CORRUPT, CRASH_ALWAYS)
KINDS = (*TASK_KINDS, OUTAGE, AGGREGATE_CRASH, PIPELINE_CRASH)


@dataclasses.dataclass(frozen=True)
class ScheduledFault:
    """One `fault_schedule` entry: `kind@round[:target]`, round may be `first-last`.
    The target is a shard index (crash, hang, corrupt) or a client id (outage)."""

    kind: str
    first_round: int
    last_round: int
    target: int | None

    @classmethod
    def parse(cls, entry: str) -> ScheduledFault:
        kind, _, rest = entry.partition("@")
        rounds, _, target = rest.partition(":")
        first, _, last = rounds.partition("-")
        if kind not in KINDS or not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"'{entry}' is not kind@round[-round][:target], kind in {KINDS}")
        if target and not target.isdigit():
            raise ValueError(f"'{entry}': the target must be a shard index or client id")
        needs_target = kind in (*TASK_KINDS, OUTAGE)
        if needs_target != bool(target):
            raise ValueError(f"'{entry}': {kind} {'needs' if needs_target else 'takes no'} target")
        first_round = int(first)
        return cls(kind, first_round, int(last) if last else first_round, int(target or 0))

    def hits(self, kind: str, round_number: int, target: int | None = None) -> bool:
        return (
            self.kind == kind
            and self.first_round <= round_number <= self.last_round
            and (target is None or self.target == target)
        )
