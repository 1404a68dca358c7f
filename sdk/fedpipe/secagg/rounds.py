"""Secure aggregation in a federated round: the run config's session, the simulated
clients' entropy and dropouts, and the artifacts that carry protocol messages between
the client-side tasks and the server-side stages.

Client-side steps (advertise_keys, share_keys, local_train, confirm_survivors,
unmask_response, run by a client runtime) rebuild a client from its state store (its
entropy and journal, fedpipe.secagg.client_state), its signing identity and the keys it
trusts (a `ClientFactory`: the simulated clients' PKI directory, or an agent's
certificate) and the messages it has seen; the server-side stages (request_unmasking,
aggregate) read only the messages, never a client's secrets.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedpipe import secagg
from fedpipe.aggregation.chain import AggregationChain
from fedpipe.aggregation.layer import Aggregate, ClientContext
from fedpipe.aggregation.outcome import Rejection
from fedpipe.artifacts import wire
from fedpipe.artifacts.round_plan import Cohort, RoundPlan
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.config import RunConfig
from fedpipe.privacy import randomness
from fedpipe.secagg import graph, shamir
from fedpipe.secagg.client_state import ClientState, PublicKeyDirectory
from fedpipe.secagg.encoding import encoding_for
from fedpipe.secagg.quantization import TRAILING_WORDS

ENCODING = "secagg"  # the ClientUpdate encoding of a masked update
_DROPOUT_TAG = 0xD209
STEPS = ("advertise", "share_keys", "unmask_request", "confirm", "unmask_response")


def enabled(config: RunConfig) -> bool:
    return config.aggregation.secure.mode != "off"


def session_for(config: RunConfig, cohort: Cohort, model_size: int) -> secagg.Session:
    """The round's public parameters, derived identically by the server and every client
    from the round plan: the session id the server drew, the cohort, the graph."""
    if not cohort.session_id:
        raise secagg.ProtocolAbort(
            f"round {cohort.round_number}: the round plan carries no secure-aggregation "
            "session id (written by select); was it made by an older fedpipe?"
        )
    clients = sorted(cohort.clients)
    if config.aggregation.secure.mode == "secagg":
        neighbours = graph.complete(clients)
    else:
        k = config.aggregation.secure.neighbours or graph.default_neighbours(len(clients))
        graph_seed = int(cohort.session_id, 16)  # public, fresh each round
        neighbours = graph.random_regular(clients, k, graph_seed, cohort.round_number)
    return secagg.Session(
        cohort.round_number,
        neighbours,
        config.aggregation.secure.threshold,
        encoding_for(config, max(len(clients), 1)),
        model_size + TRAILING_WORDS,
        cohort.session_id,
    )


def state_root(config: RunConfig) -> str:
    """Where the clients keep their state (never read by server-side stages)."""
    if config.clients.state_dir is None:
        raise secagg.ProtocolAbort(
            "secure aggregation needs clients.state_dir (the clients' state store); "
            "fedpipe simulate and fedpipe run set it under the run folder"
        )
    return config.clients.state_dir


def client(
    config: RunConfig, session: secagg.Session, client_id: int, *, advertising: bool = False
) -> secagg.SecAggClient:
    """A simulated client from its state store. Advertising (step 1) draws the session's
    entropy (os.urandom; seeded only in reproducible-simulation mode) and stores it; every
    later step reloads it, so the client's keys and what it revealed survive a rebuilt
    task. Its signing key is registered in the simulation's PKI directory."""
    state = ClientState(state_root(config), client_id)
    fresh = None
    if advertising:
        source = randomness.for_config(config)
        fresh = source.token_bytes(32, "secagg-entropy", session.session_id, client_id)
    return state.client(
        session, fresh, identity=state.identity(), directory=PublicKeyDirectory(state_root(config))
    )


class ClientFactory(Protocol):
    """How a runtime builds one of its clients for a session: from its state store, with
    the signing identity it signs with and the directory of keys it trusts (for an agent,
    certified by the certificates in the advertisements it was sent)."""

    def __call__(
        self,
        session: secagg.Session,
        client_id: int,
        messages: Messages | None = None,
        *,
        advertising: bool = False,
    ) -> secagg.SecAggClient: ...


def simulated_clients(config: RunConfig) -> ClientFactory:
    """The simulated clients' factory: their store and PKI directory under
    clients.state_dir."""

    def make(
        session: secagg.Session,
        client_id: int,
        messages: Messages | None = None,
        *,
        advertising: bool = False,
    ) -> secagg.SecAggClient:
        return client(config, session, client_id, advertising=advertising)

    return make


def simulated_dropouts(config: RunConfig, cohort: Cohort) -> frozenset[int]:
    """The clients that (in simulation) vanish after sharing keys, before their masked input."""
    count = round(config.simulation.faults.secagg_dropout * len(cohort.clients))
    rng = np.random.default_rng([config.seed, cohort.round_number, _DROPOUT_TAG])
    return frozenset(int(c) for c in rng.choice(sorted(cohort.clients), count, replace=False))


@dataclasses.dataclass
class Messages:
    """Every protocol message of one round found in a set of artifacts, by step."""

    advertisements: list[secagg.KeyAdvertisement] = dataclasses.field(default_factory=list)
    key_shares: list[secagg.KeyShares] = dataclasses.field(default_factory=list)
    requests: list[secagg.UnmaskRequest] = dataclasses.field(default_factory=list)
    confirmations: list[secagg.SurvivorConfirmation] = dataclasses.field(default_factory=list)
    responses: list[secagg.UnmaskResponse] = dataclasses.field(default_factory=list)
    seconds: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict)

    @property
    def request(self) -> secagg.UnmaskRequest:
        if len(self.requests) != 1:
            raise secagg.ProtocolAbort(f"expected one unmasking request, got {len(self.requests)}")
        return self.requests[0]


_TYPES: dict[str, Any] = {
    "advertise": (secagg.KeyAdvertisement, "advertisements"),
    "share_keys": (secagg.KeyShares, "key_shares"),
    "unmask_request": (secagg.UnmaskRequest, "requests"),
    "confirm": (secagg.SurvivorConfirmation, "confirmations"),
    "unmask_response": (secagg.UnmaskResponse, "responses"),
}


def save_messages(
    path: str | Path, step: str, round_number: int, messages: list, seconds: dict[int, float]
) -> None:
    """One artifact of one step's messages (and, apart from them, how long each took).
    An artifact is a JSON list of such records, so a transcript is their concatenation."""
    record = {
        "step": step,
        "round": round_number,
        "messages": [m.to_dict() for m in messages],
        "seconds": {str(k): v for k, v in seconds.items()},
    }
    _write_records(path, [record])


def relay(paths: Sequence[str | Path], out_path: str | Path) -> None:
    """The server forwards what it received: one transcript artifact of all the records."""
    _write_records(out_path, [r for p in paths for r in json.loads(Path(p).read_text())])


def _write_records(path: str | Path, records: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(records, sort_keys=True))


def load_messages(paths: Sequence[str | Path], round_number: int) -> Messages:
    found = Messages()
    records = [r for p in paths for r in json.loads(Path(p).read_text())]
    for record in records:
        if record["round"] != round_number:
            raise secagg.ProtocolAbort(
                f"messages of round {record['round']} in round {round_number}"
            )
        cls, attribute = _TYPES[record["step"]]
        getattr(found, attribute).extend(cls.from_dict(m) for m in record["messages"])
        times = found.seconds.setdefault(record["step"], {})
        times.update({int(k): v for k, v in record["seconds"].items()})
    return found


def server_through_masking(
    session: secagg.Session, messages: Messages, masked: list[secagg.MaskedInput]
) -> tuple[secagg.SecAggServer, secagg.UnmaskRequest]:
    """The server's first three steps replayed from the messages (they are deterministic),
    ending with its unmasking request."""
    server = secagg.SecAggServer(session)
    server.receive_advertisements(messages.advertisements)
    server.route_shares(messages.key_shares)
    return server, server.request_unmasking(masked)


def inbox_of(
    session: secagg.Session, messages: Messages, client_id: int
) -> list[secagg.EncryptedShare]:
    """The shares the server routes to a client: its routing is a pure function of the
    messages, so a client task applies it to the collected messages."""
    server = secagg.SecAggServer(session)
    server.receive_advertisements(messages.advertisements)
    return server.route_shares(messages.key_shares).get(client_id, [])


def caught_up(
    c: secagg.SecAggClient, session: secagg.Session, messages: Messages
) -> secagg.SecAggClient:
    """A client back in the state it had after receiving its shares (its own shares are
    regenerated from the entropy in its state store, so nothing secret travels between
    its tasks, and its journal remembers what it confirmed and revealed)."""
    c.share_keys(messages.advertisements)
    c.receive_shares(inbox_of(session, messages, c.client_id))
    return c


@dataclasses.dataclass(frozen=True)
class ProtocolReport:
    """Protocol figures of one round, for the round report and MLflow."""

    mode: str
    bits: int
    word_bits: int
    survivors: int
    dropouts_recovered: int
    bytes_per_client: float
    client_seconds: dict[str, float]  # step -> mean seconds per client
    server_seconds: dict[str, float]
    # The survivors' weighted mean training loss, unmasked with their sum (None under DP).
    train_loss: float | None = None

    def metrics(self) -> dict[str, float]:
        values = {
            "secagg/survivors": self.survivors,
            "secagg/dropouts_recovered": self.dropouts_recovered,
            "secagg/bytes_per_client": self.bytes_per_client,
        }
        if self.train_loss is not None:
            values["train_loss"] = self.train_loss
        values.update({f"secagg/client_seconds/{k}": v for k, v in self.client_seconds.items()})
        values.update({f"secagg/server_seconds/{k}": v for k, v in self.server_seconds.items()})
        return {k: float(v) for k, v in values.items()}


def bytes_sent(messages: Messages, masked: list[secagg.MaskedInput]) -> float:
    """Mean bytes a client sent over the four steps (keys, ciphertexts, vector, shares)."""
    sent: dict[int, int] = {}
    for a in messages.advertisements:
        sent[a.client_id] = sent.get(a.client_id, 0) + 64 + len(a.certificate)
    for s in messages.key_shares:
        sent[s.client_id] = sent.get(s.client_id, 0) + sum(len(e.ciphertext) for e in s.shares)
    for m in masked:
        sent[m.client_id] = sent.get(m.client_id, 0) + m.vector.nbytes
    for r in messages.responses:
        count = len(r.self_mask_shares) + len(r.mask_key_shares)
        sent[r.client_id] = sent.get(r.client_id, 0) + shamir.SHARE_BYTES * count
    return float(np.mean(list(sent.values()))) if sent else 0.0


def client_transform(
    chain: AggregationChain, ctx: ClientContext, *, honest: bool = True
) -> secagg.UpdateTransform:
    """What a client applies to its update before quantization: the chain's client part
    (under DP the clip and its noise share, under norm bounding the clip). A dishonest
    client (a simulated attacker: fedpipe.simulation.mods) skips it."""
    if not honest:
        return secagg.no_transform
    return lambda delta: chain.client_update(delta, ctx)[0]


def masked_update(
    c: secagg.SecAggClient,
    chain: AggregationChain,
    plan: RoundPlan,
    update: ClientUpdate,
    state_dir: Path | None,
    *,
    honest: bool = True,
) -> ClientUpdate:
    """Step 3 for one client caught up with the key shares: its trained delta encoded
    (with the chain's client part inside) and masked. The example count and the training
    loss travel inside the masked vector, so the record says 0 for both. Raises
    NonFiniteUpdate for an update it must withhold."""
    started = time.perf_counter()
    session = c.session
    ctx = ClientContext.for_update(plan, update, secure=True, state_dir=state_dir)
    encoded = session.encoding.encode(
        update.vector,
        chain.weighting.secure_weight(ctx, session.encoding.max_examples),
        client_transform(chain, ctx, honest=honest),
        loss=update.train_loss,
    )
    return ClientUpdate.of(
        update.client_id,
        c.masked_input(encoded).vector,
        num_examples=0,
        train_loss=0.0,
        duration_s=update.duration_s + time.perf_counter() - started,
        encoding=ENCODING,
    )


def mask_updates(
    config: RunConfig,
    chain: AggregationChain,
    plan: RoundPlan,
    updates: list[ClientUpdate],
    message_paths: Sequence[str | Path],
    state_dir: Path | None,
    make_client: ClientFactory,
    honest: Callable[[int], bool] = lambda client_id: True,
) -> list[ClientUpdate]:
    """Step 3, client side: replace each trained delta by the client's masked input.
    Clients picked by `secagg_simulated_dropout` vanish here, after having shared their
    keys; `honest(client_id)` is False for a client that skips the chain's client part."""
    if not updates:
        return []
    if not message_paths:
        raise secagg.ProtocolAbort(
            "secure aggregation is on but local train got no key shares: was the pipeline "
            "compiled with secure_aggregation off? Compile it with this config"
        )
    session = session_for(config, plan.cohort, plan.spec.size)
    messages = load_messages(message_paths, plan.cohort.round_number)
    dropped = simulated_dropouts(config, plan.cohort)
    masked = []
    for u in updates:
        if u.client_id in dropped:
            continue
        c = caught_up(make_client(session, u.client_id, messages), session, messages)
        try:
            masked.append(masked_update(c, chain, plan, u, state_dir, honest=honest(u.client_id)))
        except secagg.NonFiniteUpdate as e:  # the client withholds it: a dropout to the server
            print(f"round {plan.cohort.round_number}: client {u.client_id}: {e}", flush=True)
    return masked


@dataclasses.dataclass(frozen=True)
class SecureSum:
    accepted: list[ClientUpdate]  # the survivors, whose masked inputs are in the sum
    rejected: list[Rejection]
    aggregate: Aggregate  # the survivors' weighted sum, in the chain's weight units
    report: ProtocolReport


def unmask_sum(
    config: RunConfig,
    chain: AggregationChain,
    plan: RoundPlan,
    received: list[ClientUpdate],
    message_paths: Sequence[str | Path],
) -> SecureSum:
    """Server side: replay the protocol from the messages, unmask the survivors' sum and
    keep it as the chain's aggregate (sum and total weight). Raises ThresholdNotMet
    (nothing is learned) when a secret can no longer be recovered."""
    started = time.perf_counter()
    session = session_for(config, plan.cohort, plan.spec.size)
    messages = load_messages(message_paths, plan.cohort.round_number)
    rejected, masked = [], []
    for u in received:
        if u.encoding != ENCODING:
            rejected.append(
                Rejection(u.client_id, f"encoding {u.encoding!r} under secure aggregation")
            )
        elif wire.checksum(u.vector) != u.checksum:
            rejected.append(
                Rejection(u.client_id, "checksum mismatch (corrupted in transit or storage)")
            )
        else:
            masked.append(secagg.MaskedInput(u.client_id, u.vector))
    server, request = server_through_masking(session, messages, masked)
    if messages.request != request:
        raise secagg.ProtocolAbort(
            "the clients answered another unmasking request than the server's"
        )
    replayed = time.perf_counter()
    summed = server.unmask_sum(messages.responses)
    mean, total_weight = session.encoding.decode_mean(summed)
    weight = total_weight / chain.weighting.secure_unit(session.encoding.max_examples)
    aggregate = Aggregate(mean.astype(np.float64) * weight, weight, len(request.survivors))
    unmasked = time.perf_counter()
    rejected += [Rejection(r.client_id, r.reason) for r in server.refusals]
    client_seconds = {
        step: float(np.mean(list(times.values())))
        for step, times in messages.seconds.items()
        if step != "unmask_request" and times
    }
    report = ProtocolReport(
        mode=config.aggregation.secure.mode,
        bits=session.encoding.bits,
        word_bits=session.encoding.word.itemsize * 8,
        survivors=len(request.survivors),
        dropouts_recovered=len(request.dropped),
        bytes_per_client=bytes_sent(messages, masked),
        client_seconds=client_seconds,
        train_loss=session.encoding.decode_loss(summed),
        server_seconds={
            "request_unmasking": sum(messages.seconds.get("unmask_request", {}).values()),
            "replay": replayed - started,
            "unmask": unmasked - replayed,
        },
    )
    accepted = [u for u in received if u.client_id in set(request.survivors)]
    return SecureSum(accepted, rejected, aggregate, report)
