"""The dashboard's agents section: client agents as a coordinator reports them.

The dashboard does not talk to a coordinator itself; whoever starts it passes a source
(a callable returning the rows). Without one the section says no coordinator is set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable


@dataclasses.dataclass(frozen=True)
class AgentRow:
    agent_id: str
    online: bool
    last_heartbeat: float | None  # seconds since the epoch
    rounds_served: int


AgentSource = Callable[[], Iterable[AgentRow]]


def agent_rows(source: AgentSource | None) -> list[AgentRow]:
    """The agents to show, ordered by id; an empty list when no coordinator is configured."""
    if source is None:
        return []
    return sorted(source(), key=lambda row: row.agent_id)
