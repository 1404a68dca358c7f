"""The client runtime: what the clients of one shard do in a round, behind one interface.

Every client-side step of a round goes through a `ClientRuntime`: which clients can be
reached (for select), and, for the clients of one shard, their key advertisements, key
shares, updates (masked under secure aggregation), survivor confirmations and unmasking
responses. The stages call it and write what it returns; who runs the clients is the
runtime's business, picked from `clients.runtime` in one place (`for_config`):

- `InProcessClients` runs them here: it trains them from a data source (a partition of a
  dataset in a simulation, fedpipe.simulation.clients), with composable mods around each
  client (`fedpipe.simulation.mods`: attacks, simulated systems, injected outages), and
  keeps their secure-aggregation state under `clients.state_dir`;
- `fedpipe.agents.remote_clients.AgentClients` sends each step to the client agents at
  the data owners, through the coordinator.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import ClientContext
from fedpipe.artifacts import wire
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.secagg import (
    KeyAdvertisement,
    KeyShares,
    Session,
    SurvivorConfirmation,
    UnmaskResponse,
    rounds,
)

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


@dataclasses.dataclass
class Answers:
    """One protocol step's messages from the clients that answered, and how long each
    client took (clients that did not answer are missing from both)."""

    messages: list[Any] = dataclasses.field(default_factory=list)
    seconds: dict[int, float] = dataclasses.field(default_factory=dict)


class ClientMod(Protocol):
    """Something wrapped around an honest client (in a simulation): it may keep the client
    from sending (returns the reason), change its data, or change its update."""

    def skip_reason(self, round_number: int, client_id: int, num_examples: int) -> str | None: ...

    def data(
        self, client_id: int, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def update(self, round_number: int, client_id: int, delta: np.ndarray) -> np.ndarray: ...

    def skips_client_steps(self, client_id: int) -> bool:
        """Does the client skip the honest client-side steps (the chain's client part)
        before masking, as a hostile client would?"""
        ...


class ClientRuntime(Protocol):
    """The client side of a round. The per-shard steps take the round plan and the
    shard's clients (the stage has already left out the clients a step does not ask);
    message_paths are the protocol artifacts the step's clients are sent."""

    def online(self, client_ids: Sequence[int]) -> list[int] | None:
        """The clients that can be reached now, or None when the runtime has no notion
        of liveness (every client can be asked)."""
        ...

    def advertise(self, plan: RoundPlan, clients: Sequence[int]) -> Answers:
        """Secure aggregation step 1: each client's (signed) public keys."""
        ...

    def share_keys(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        """Step 2: each client's encrypted shares for its neighbours."""
        ...

    def updates(
        self, plan: RoundPlan, clients: Sequence[int], secagg_messages: Sequence[str | Path]
    ) -> list[ClientUpdate]:
        """Each client's update (masked under secure aggregation, step 3); clients that
        send nothing are left out."""
        ...

    def confirm(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        """The consistency check: each client's signature on the request it was sent."""
        ...

    def unmask(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        """Step 4: each client's answer to the unmasking request."""
        ...


def for_config(config: RunConfig) -> ClientRuntime:
    """The one place `clients.runtime` picks who runs the clients."""
    if config.clients.runtime == "agents":
        from fedpipe.agents.remote_clients import AgentClients

        return AgentClients.for_config(config)
    from fedpipe.simulation.clients import simulated_clients

    state_dir = config.clients.state_dir
    return simulated_clients(config, Path(state_dir) if state_dir else None)


class InProcessClients:
    """Clients run in this process: trained from `data` by the trainer that `trainer`
    builds (on first use: the protocol steps need none), each wrapped by the mods that
    `mods` makes for that trainer. `state_dir` is the clients' own storage; `secagg_client`
    builds a client's secure-aggregation side (default: the simulated clients' state
    store and PKI directory under `clients.state_dir`)."""

    def __init__(
        self,
        config: RunConfig,
        data: ClientData,
        trainer: Callable[[], Trainer],
        mods: Callable[[Trainer], Sequence[ClientMod]] = lambda trainer: (),
        state_dir: Path | None = None,
        secagg_client: rounds.ClientFactory | None = None,
    ) -> None:
        self.config, self.data, self.state_dir = config, data, state_dir
        self._make_trainer, self._make_mods = trainer, mods
        self.secagg_client = secagg_client or rounds.simulated_clients(config)

    @functools.cached_property
    def trainer(self) -> Trainer:
        return self._make_trainer()

    @functools.cached_property
    def mods(self) -> list[ClientMod]:
        return list(self._make_mods(self.trainer))

    def online(self, client_ids: Sequence[int]) -> list[int] | None:
        return None  # the mods decide in the round who sends nothing

    def _each(
        self,
        plan: RoundPlan,
        clients: Sequence[int],
        message_paths: Sequence[str | Path] | None,
        step: Callable[[Any, int, rounds.Messages | None], Any],
    ) -> Answers:
        """One protocol step of each client, timed; `step` is one of the `*_one` methods."""
        answers = Answers()
        if not clients:
            return answers
        session = rounds.session_for(self.config, plan.cohort, plan.spec.size)
        messages = None
        if message_paths is not None:
            messages = rounds.load_messages(message_paths, plan.cohort.round_number)
        for client_id in clients:
            started = time.perf_counter()
            answers.messages.append(step(session, client_id, messages))
            answers.seconds[client_id] = time.perf_counter() - started
        return answers

    def advertise(self, plan: RoundPlan, clients: Sequence[int]) -> Answers:
        return self._each(plan, clients, None, self.advertise_one)

    def share_keys(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        return self._each(plan, clients, message_paths, self.share_keys_one)

    def confirm(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        return self._each(plan, clients, message_paths, self.confirm_one)

    def unmask(
        self, plan: RoundPlan, clients: Sequence[int], message_paths: Sequence[str | Path]
    ) -> Answers:
        return self._each(plan, clients, message_paths, self.unmask_one)

    # One client's protocol steps, given the session and the messages it was sent.

    def advertise_one(
        self, session: Session, client_id: int, messages: rounds.Messages | None = None
    ) -> KeyAdvertisement:
        return self.secagg_client(session, client_id, advertising=True).advertise()

    def share_keys_one(
        self, session: Session, client_id: int, messages: rounds.Messages
    ) -> KeyShares:
        return self.secagg_client(session, client_id, messages).share_keys(messages.advertisements)

    def confirm_one(
        self, session: Session, client_id: int, messages: rounds.Messages
    ) -> SurvivorConfirmation:
        return self.secagg_client(session, client_id, messages).confirm(messages.request)

    def unmask_one(
        self, session: Session, client_id: int, messages: rounds.Messages
    ) -> UnmaskResponse:
        c = rounds.caught_up(self.secagg_client(session, client_id, messages), session, messages)
        return c.unmask(messages.request, messages.confirmations)

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
        chain = build_chain(self.config)
        if chain.secure:  # the chain's client part runs inside the masking
            return rounds.mask_updates(
                self.config,
                chain,
                plan,
                trained,
                secagg_messages,
                self.state_dir,
                self.secagg_client,
                honest=lambda c: not any(m.skips_client_steps(c) for m in self.mods),
            )
        sent = []
        for u in trained:
            ctx = ClientContext.for_update(plan, u, secure=False, state_dir=self.state_dir)
            delta, _ = chain.client_update(u.vector, ctx)
            if delta is not u.vector:  # a client layer changed it: stamp what is sent
                u = dataclasses.replace(u, vector=delta, checksum=wire.checksum(delta))
            sent.append(u)
        return sent
