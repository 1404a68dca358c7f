"""What only a simulation wraps around an honest client: injected outages, simulated
systems (offline, crashed, too slow for the deadline) and attacks on data or updates.
Each is a mod of fedpipe.clients.runtime.InProcessClients; `for_config` composes them."""

from __future__ import annotations

import numpy as np

from fedpipe.config import RunConfig
from fedpipe.simulation import attacks, client_systems, faults


class _Mod:
    def skip_reason(self, round_number: int, client_id: int, num_examples: int) -> str | None:
        return None

    def data(self, client_id: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, y

    def update(self, round_number: int, client_id: int, delta: np.ndarray) -> np.ndarray:
        return delta

    def skips_client_steps(self, client_id: int) -> bool:
        return False


class InjectedOutage(_Mod):
    """A client named in the fault schedule's `outage` entries is out for those rounds."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def skip_reason(self, round_number: int, client_id: int, num_examples: int) -> str | None:
        return (
            "injected outage" if faults.client_out(self.config, round_number, client_id) else None
        )


class SimulatedSystem(_Mod):
    """Heterogeneous clients: offline, crashed or past the deadline send nothing."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def skip_reason(self, round_number: int, client_id: int, num_examples: int) -> str | None:
        fate = client_systems.client_round(self.config, round_number, client_id, num_examples).fate
        return None if fate == client_systems.OK else fate


class Attack(_Mod):
    """A hostile client poisons its labels or its update (fedpipe.simulation.attacks)."""

    def __init__(self, config: RunConfig, num_classes: int) -> None:
        self.config, self.num_classes = config, num_classes

    def data(self, client_id: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, attacks.poison_labels(self.config, client_id, y, self.num_classes)

    def update(self, round_number: int, client_id: int, delta: np.ndarray) -> np.ndarray:
        return attacks.poison_update(self.config, round_number, client_id, delta)

    def skips_client_steps(self, client_id: int) -> bool:
        """An attacker that crafts its update skips the honest client steps (the clip and
        the DP noise share before masking); a label flipper trains and sends honestly."""
        return attacks.skips_client_steps(self.config, client_id)


def for_config(config: RunConfig, num_classes: int) -> list[_Mod]:
    """The mods a config turns on, outermost first."""
    mods: list[_Mod] = []
    if faults.enabled(config):
        mods.append(InjectedOutage(config))
    mods.append(SimulatedSystem(config))
    if config.simulation.attack.kind != "none":
        mods.append(Attack(config, num_classes))
    return mods
