"""The protocol steps of secure aggregation that run around local train and aggregate.

Client-side tasks (one per shard): advertise_keys before local train, share_keys after
it has all advertisements, confirm_survivors after the server's request (each client
signs the request it was sent: the consistency check), unmask_response once the
confirmations are relayed. Server-side: request_unmasking, once the masked updates are
in. local_train emits the masked inputs and aggregate unmasks only their sum.

The client-side steps ask the client runtime (fedpipe.clients.runtime: simulated clients
in this task, or the shard's agents) and write the messages it returns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ShardUnreadable, load_shard
from fedpipe.clients import runtime
from fedpipe.config import RunConfig
from fedpipe.secagg import MaskedInput
from fedpipe.secagg import rounds as sa


def _shard_clients(plan: RoundPlan, shard: int) -> list[int]:
    return [] if plan.cohort.stopped else plan.cohort.shards[shard]


def advertise_keys(
    config: RunConfig, plan_path: str | Path, shard: int, out_path: str | Path
) -> None:
    """Step 1, client side: the public keys of every client of the shard."""
    plan = RoundPlan.load(plan_path)
    clients = _shard_clients(plan, shard)
    _write(out_path, "advertise", plan, runtime.for_config(config).advertise(plan, clients))


def share_keys(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    advertisement_paths: Sequence[str | Path],
    out_path: str | Path,
) -> None:
    """Step 2, client side: each client's encrypted shares for its neighbours (after
    checking every advertisement's signature: a substituted key aborts the round)."""
    plan = RoundPlan.load(plan_path)
    clients = _shard_clients(plan, shard)
    answers = runtime.for_config(config).share_keys(plan, clients, advertisement_paths)
    _write(out_path, "share_keys", plan, answers)


def relay_messages(message_paths: Sequence[str | Path], out_path: str | Path) -> None:
    """Server side, after steps 1, 2 and 4: forward everything received so far, as one
    transcript artifact (each client picks out what is addressed to it)."""
    sa.relay(message_paths, out_path)


def request_unmasking(
    config: RunConfig,
    plan_path: str | Path,
    message_paths: Sequence[str | Path],
    update_paths: Sequence[str | Path],
    out_path: str | Path,
) -> None:
    """Step 3 ends, server side: name the survivors and the dropped, and write the
    transcript so far followed by that request. Raises ThresholdNotMet when some client's
    secrets can no longer be recovered."""
    plan = RoundPlan.load(plan_path)
    n = plan.cohort.round_number
    started = time.perf_counter()
    requests = []
    if not plan.cohort.stopped:
        session = sa.session_for(config, plan.cohort, plan.spec.size)
        messages = sa.load_messages(message_paths, n)
        _, request = sa.server_through_masking(session, messages, masked_inputs(update_paths))
        requests.append(request)
    sa.save_messages(out_path, "unmask_request", n, requests, {-1: time.perf_counter() - started})
    sa.relay([*message_paths, out_path], out_path)


def confirm_survivors(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    message_paths: Sequence[str | Path],
    out_path: str | Path,
) -> None:
    """Consistency check, client side: each surviving client of the shard signs the
    unmasking request it was sent (and refuses to sign a second, different one)."""
    plan = RoundPlan.load(plan_path)
    clients = _survivors(plan, shard, message_paths)
    answers = runtime.for_config(config).confirm(plan, clients, message_paths)
    _write(out_path, "confirm", plan, answers)


def unmask_response(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    message_paths: Sequence[str | Path],
    out_path: str | Path,
) -> None:
    """Step 4, client side: the shares the request asks for, from each surviving client of
    the shard, once the relayed confirmations show that its share holders were all sent
    this same request (an honest client refuses an unsafe or inconsistent request, and
    the round aborts)."""
    plan = RoundPlan.load(plan_path)
    clients = _survivors(plan, shard, message_paths)
    answers = runtime.for_config(config).unmask(plan, clients, message_paths)
    _write(out_path, "unmask_response", plan, answers)


def _write(out_path: str | Path, step: str, plan: RoundPlan, answers: runtime.Answers) -> None:
    """A client-side step's artifact: its clients' messages and how long each took."""
    sa.save_messages(out_path, step, plan.cohort.round_number, answers.messages, answers.seconds)


def _survivors(plan: RoundPlan, shard: int, message_paths: Sequence[str | Path]) -> list[int]:
    """The shard's clients that the server's request names as survivors: the ones asked."""
    clients = _shard_clients(plan, shard)
    if not clients:
        return []
    request = sa.load_messages(message_paths, plan.cohort.round_number).request
    return [c for c in clients if c in request.survivors]


def masked_inputs(update_paths: Sequence[str | Path]):
    """The masked inputs in the shards' update artifacts (unreadable shards count as
    clients that dropped)."""
    found = []
    for path in update_paths:
        try:
            updates = load_shard(path)
        except ShardUnreadable:
            continue
        found += [MaskedInput(u.client_id, u.vector) for u in updates if u.encoding == sa.ENCODING]
    return found
