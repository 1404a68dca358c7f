"""The protocol steps of secure aggregation that run around local train and aggregate.

Client-side tasks (one per shard): advertise_keys before local train, share_keys after
it has all advertisements, confirm_survivors after the server's request (each client
signs the request it was sent: the consistency check), unmask_response once the
confirmations are relayed. Server-side: request_unmasking, once the masked updates are
in. local_train emits the masked inputs and aggregate unmasks only their sum.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedpipe import secagg
from fedpipe.agents import remote_clients
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ShardUnreadable, load_shard
from fedpipe.config import RunConfig
from fedpipe.secagg import MaskedInput
from fedpipe.secagg import rounds as sa


def _shard_clients(plan: RoundPlan, shard: int) -> list[int]:
    return [] if plan.cohort.stopped else plan.cohort.shards[shard]


def advertise_keys(
    config: RunConfig, plan_path: str | Path, shard: int, out_path: str | Path
) -> None:
    """Step 1, client side: the public keys of every client of the shard."""
    if remote_clients.enabled(config):
        return remote_clients.advertise_keys(config, plan_path, shard, out_path)
    plan = RoundPlan.load(plan_path)
    ads, seconds = [], {}
    clients = _shard_clients(plan, shard)
    if clients:
        session = sa.session_for(config, plan.cohort, plan.spec.size)
        for client_id in clients:
            started = time.perf_counter()
            ads.append(sa.client(config, session, client_id, advertising=True).advertise())
            seconds[client_id] = time.perf_counter() - started
    sa.save_messages(out_path, "advertise", plan.cohort.round_number, ads, seconds)


def share_keys(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    advertisement_paths: Sequence[str | Path],
    out_path: str | Path,
) -> None:
    """Step 2, client side: each client's encrypted shares for its neighbours."""
    if remote_clients.enabled(config):
        return remote_clients.share_keys(config, plan_path, shard, advertisement_paths, out_path)
    plan = RoundPlan.load(plan_path)
    n = plan.cohort.round_number
    clients = _shard_clients(plan, shard)
    messages = sa.load_messages(advertisement_paths, n) if clients else sa.Messages()
    shares, seconds = [], {}
    if clients:
        session = sa.session_for(config, plan.cohort, plan.spec.size)
        for client_id in clients:
            started = time.perf_counter()
            shares.append(sa.client(config, session, client_id).share_keys(messages.advertisements))
            seconds[client_id] = time.perf_counter() - started
    sa.save_messages(out_path, "share_keys", n, shares, seconds)


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
    # Agents hold no signing identity yet: they run the honest-but-curious protocol
    # (docs/deployment.md), so there is nothing for them to sign.
    clients = [] if remote_clients.enabled(config) else _shard_clients(plan, shard)
    _answer_request(
        config,
        plan,
        clients,
        message_paths,
        out_path,
        "confirm",
        lambda session, messages, client_id: sa.client(config, session, client_id).confirm(
            messages.request
        ),
    )


def unmask_response(
    config: RunConfig,
    plan_path: str | Path,
    shard: int,
    message_paths: Sequence[str | Path],
    out_path: str | Path,
) -> None:
    """Step 4, client side: the shares the request asks for, from each surviving client of
    the shard, once the relayed confirmations show that its share holders were all sent
    this same request (an honest client refuses an unsafe or inconsistent request,
    failing the task)."""
    if remote_clients.enabled(config):
        return remote_clients.unmask_response(config, plan_path, shard, message_paths, out_path)
    plan = RoundPlan.load(plan_path)
    _answer_request(
        config,
        plan,
        _shard_clients(plan, shard),
        message_paths,
        out_path,
        "unmask_response",
        lambda session, messages, client_id: sa.rebuild_client(
            config, session, messages, client_id
        ).unmask(messages.request, messages.confirmations),
    )


def _answer_request(
    config: RunConfig,
    plan: RoundPlan,
    clients: list[int],
    message_paths: Sequence[str | Path],
    out_path: str | Path,
    step: str,
    answer: Callable[[secagg.Session, sa.Messages, int], Any],
) -> None:
    """Each of the clients that the server's request names as a survivor answers it; the
    answers (and how long each took) are the step's artifact."""
    n = plan.cohort.round_number
    answers, seconds = [], {}
    if clients:
        session = sa.session_for(config, plan.cohort, plan.spec.size)
        messages = sa.load_messages(message_paths, n)
        for client_id in clients:
            if client_id not in messages.request.survivors:
                continue
            started = time.perf_counter()
            answers.append(answer(session, messages, client_id))
            seconds[client_id] = time.perf_counter() - started
    sa.save_messages(out_path, step, n, answers, seconds)


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
