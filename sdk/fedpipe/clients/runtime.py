"""The client runtime: what the clients of one shard do in a round, behind one interface.

A local-train task asks the runtime for its shard's updates; the secure-aggregation tasks
ask it for the clients' protocol messages. Who runs the clients is the runtime's business:
`InProcessClients` trains them here from a data source (a partition of a dataset in a
simulation), with composable mods around each client (`fedpipe.simulation.mods`: attacks,
simulated systems, injected outages); a remote runtime sends the work to client agents.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import ClientContext
from fedpipe.artifacts import wire
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.secagg import rounds

if TYPE_CHECKING:
    from fedpipe.config import RunConfig
    from fedpipe.training.trainer import Trainer


def with_state_dir(config: RunConfig, run_folder: str | Path) -> RunConfig:
    """The config with the simulated clients' own storage (their signing identities,
    secure-aggregation state, compression residuals) under <run folder>/clients, unless
    set. No server-side stage reads it."""
    if config.clients.state_dir is not None:
        return config
    return config.replace({"clients.state_dir": str(Path(run_folder).resolve() / "clients")})


class ClientData(Protocol):
    """Where a client's private examples come from."""

    def client_data(self, client_id: int) -> tuple[np.ndarray, np.ndarray]: ...


class ClientMod(Protocol):
    """Something wrapped around an honest client (in a simulation): it may keep the client
    from sending (returns the reason), change its data, or change its update."""

    def skip_reason(self, round_number: int, client_id: int, num_examples: int) -> str | None: ...

    def data(
        self, client_id: int, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def update(self, round_number: int, client_id: int, delta: np.ndarray) -> np.ndarray: ...


class ClientRuntime(Protocol):
    """The client side of a round for the clients of one shard."""

    def updates(
        self, plan: RoundPlan, clients: Sequence[int], secagg_messages: Sequence[str | Path]
    ) -> list[ClientUpdate]:
        """Each client's update (masked under secure aggregation); clients that send
        nothing are left out."""
        ...


class InProcessClients:
    """Clients trained in this process from `data`, each wrapped by `mods`."""

    def __init__(
        self,
        config: RunConfig,
        data: ClientData,
        trainer: Trainer,
        mods: Sequence[ClientMod] = (),
        state_dir: Path | None = None,
    ) -> None:
        self.config, self.data, self.trainer, self.mods = config, data, trainer, list(mods)
        self.chain, self.state_dir = build_chain(config), state_dir

    def train(self, plan: RoundPlan, client_id: int) -> ClientUpdate | None:
        """One client's round: its delta from the global model (None if it sends nothing)."""
        round_number = plan.cohort.round_number
        started = time.perf_counter()
        x, y = self.data.client_data(client_id)
        for mod in self.mods:
            reason = mod.skip_reason(round_number, client_id, len(y))
            if reason:
                print(f"round {round_number}: client {client_id} sends no update ({reason})")
                return None
            x, y = mod.data(client_id, x, y)
        result = self.trainer.train(
            plan.weights,
            x,
            y,
            epochs=plan.training.epochs,
            batch_size=plan.training.batch_size,
            learning_rate=plan.training.learning_rate,
            mu=plan.training.fedprox_mu,
            seed=[plan.seed, round_number, client_id],
        )
        delta = result.delta
        for mod in self.mods:
            delta = mod.update(round_number, client_id, delta)
        return ClientUpdate.of(
            client_id,
            delta,
            num_examples=result.num_examples,
            train_loss=result.train_loss,
            duration_s=time.perf_counter() - started,
        )

    def updates(
        self, plan: RoundPlan, clients: Sequence[int], secagg_messages: Sequence[str | Path]
    ) -> list[ClientUpdate]:
        trained = [u for u in (self.train(plan, c) for c in clients) if u is not None]
        if self.chain.secure:  # the chain's client part runs inside the masking
            return rounds.mask_updates(
                self.config, self.chain, plan, trained, secagg_messages, self.state_dir
            )
        sent = []
        for u in trained:
            ctx = ClientContext.for_update(plan, u, secure=False, state_dir=self.state_dir)
            delta, _ = self.chain.client_update(u.vector, ctx)
            sent.append(dataclasses.replace(u, vector=delta, checksum=wire.checksum(delta)))
        return sent
