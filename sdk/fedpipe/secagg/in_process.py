"""All four steps of one round with every client in this process, timed per step and
party: what the tests and the benchmark drive, and the reference for the stage wiring."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from fedpipe.secagg import shamir
from fedpipe.secagg.client import SecAggClient
from fedpipe.secagg.server import SecAggServer
from fedpipe.secagg.session import Session


@dataclasses.dataclass
class RoundRun:
    summed: np.ndarray  # the survivors' encoded updates, summed (mod 2^word_bits)
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    client_seconds: dict[str, float]  # step -> mean seconds of one client
    server_seconds: dict[str, float]  # step -> seconds
    bytes_per_client: float  # mean bytes a client sends over the four steps


def run_round(
    session: Session,
    encoded: Callable[[int], np.ndarray],
    entropy: Callable[[int], bytes],
    drop_after_sharing: frozenset[int] = frozenset(),
) -> RoundRun:
    """Run the protocol on the encoded update of each client (`encoded(client_id)`);
    clients in `drop_after_sharing` send their keys and shares, then vanish before their
    masked input. Masked inputs stream to the server one at a time, as over a network."""
    clients = {c: SecAggClient(session, c, entropy(c)) for c in session.clients}
    server = SecAggServer(session)
    client_s: dict[str, float] = {}
    server_s: dict[str, float] = {}
    sent = dict.fromkeys(clients, 0)

    def clients_do(step: str, who: list[int], act: Callable[[SecAggClient], object]) -> list:
        started = time.perf_counter()
        out = [act(clients[c]) for c in who]
        client_s[step] = (time.perf_counter() - started) / max(len(who), 1)
        return out

    def server_does(step: str, act: Callable[[], object]):
        started = time.perf_counter()
        out = act()
        server_s[step] = time.perf_counter() - started
        return out

    everyone = list(session.clients)
    ads = clients_do("advertise", everyone, lambda c: c.advertise())
    for a in ads:
        sent[a.client_id] += len(a.cipher_public_key) + len(a.mask_public_key)
    broadcast = server_does("advertise", lambda: server.receive_advertisements(ads))
    shares = clients_do("share_keys", everyone, lambda c: c.share_keys(broadcast))
    for s in shares:
        sent[s.client_id] += sum(len(e.ciphertext) for e in s.shares)
    inbox = server_does("share_keys", lambda: server.route_shares(shares))
    alive = [c for c in everyone if c not in drop_after_sharing]
    masking_s = 0.0

    def masked_inputs():
        nonlocal masking_s
        for c in alive:
            started = time.perf_counter()  # making the update is the client's time too
            update = encoded(c)
            clients[c].receive_shares(inbox[c])
            masked = clients[c].masked_input(update)
            masking_s += time.perf_counter() - started
            sent[c] += masked.vector.nbytes
            yield masked

    request = server_does("masked_input", lambda: server.request_unmasking(masked_inputs()))
    server_s["masked_input"] -= masking_s
    client_s["masked_input"] = masking_s / max(len(alive), 1)
    responses = clients_do("unmask", list(request.survivors), lambda c: c.unmask(request))
    for r in responses:
        sent[r.client_id] += shamir.SHARE_BYTES * (len(r.self_mask_shares) + len(r.mask_key_shares))
    summed = server_does("unmask", lambda: server.unmask_sum(responses))
    return RoundRun(
        summed,
        request.survivors,
        request.dropped,
        client_s,
        server_s,
        float(np.mean(list(sent.values()))),
    )
