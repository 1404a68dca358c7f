"""Secure aggregation against an active server (Bonawitz et al. 2017, active variant), and
client state that survives a rebuilt client: each test mounts the attack and shows that
the round aborts, or that the client refuses."""

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedpipe.secagg import (
    FixedPoint,
    InconsistentView,
    KeyAdvertisement,
    ProtocolAbort,
    SecAggClient,
    SecAggServer,
    Session,
    SubstitutedKey,
    UnmaskRequest,
    UnsafeRequest,
    graph,
    primitives,
)
from fedpipe.secagg.client import nonce_of
from fedpipe.secagg.client_state import ClientState, PublicKeyDirectory
from fedpipe.secagg.quantization import TRAILING_WORDS

N = 6  # t = ceil(0.6 * 6) = 4 holders per secret (every client holds every secret)


def _session() -> Session:
    encoding = FixedPoint(1.0, 20, 4096, N)
    return Session(1, graph.complete(list(range(N))), 0.6, encoding, 10 + TRAILING_WORDS)


def _client(root, session: Session, c: int, *, fresh: bool = False) -> SecAggClient:
    """A client as a task builds it: everything from its state store."""
    state = ClientState(root, c)
    return SecAggClient(
        session,
        c,
        state.entropy(session.session_id, os.urandom(32) if fresh else None),
        identity=state.identity(),
        directory=PublicKeyDirectory(root),
        journal=state.journal(session.session_id),
    )


def _through_masking(root, session):
    """Steps 1-3 with every client surviving; returns the clients and the server."""
    clients = {c: _client(root, session, c, fresh=True) for c in range(N)}
    server = SecAggServer(session)
    ads = server.receive_advertisements([c.advertise() for c in clients.values()])
    inbox = server.route_shares([c.share_keys(ads) for c in clients.values()])
    masked = []
    for c in clients.values():
        c.receive_shares(inbox[c.client_id])
        masked.append(c.masked_input(session.encoding.encode(np.zeros(10), 10)))
    server.request_unmasking(masked)
    return clients, server, ads, inbox


def test_honest_round_with_signatures_and_the_consistency_check_sums_exactly(tmp_path):
    session = _session()
    clients, server, _, _ = _through_masking(tmp_path, session)
    request = server.request
    confirmations = [c.confirm(request) for c in clients.values()]
    responses = [c.unmask(request, confirmations) for c in clients.values()]
    summed = server.unmask_sum(responses)
    expected = sum(session.encoding.encode(np.zeros(10), 10) for _ in range(N))
    assert np.array_equal(summed, expected)
    for c in range(N):  # the state store is private to its client
        assert (tmp_path / str(c)).stat().st_mode & 0o777 == 0o700
        assert (tmp_path / str(c) / "identity.key").stat().st_mode & 0o777 == 0o600


def test_a_key_substituted_by_the_server_is_detected_and_the_round_aborts(tmp_path):
    session = _session()
    clients = {c: _client(tmp_path, session, c, fresh=True) for c in range(N)}
    ads = [c.advertise() for c in clients.values()]
    # The server swaps client 1's mask key for its own, signing with its own identity (it
    # cannot sign as client 1, whose key the PKI holds).
    server_key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    forged = KeyAdvertisement(1, ads[1].cipher_public_key, server_key)
    forged = KeyAdvertisement(
        1,
        forged.cipher_public_key,
        forged.mask_public_key,
        Ed25519PrivateKey.generate().sign(forged.signed_bytes(session.label("advertise", 1))),
    )
    with pytest.raises(SubstitutedKey, match="key advertisement of client 1"):
        clients[0].share_keys([forged if a.client_id == 1 else a for a in ads])
    # Replaying client 1's genuine advertisement of another session fails too.
    other = _session()
    stale = _client(tmp_path / "other", other, 1, fresh=True).advertise()
    with pytest.raises(SubstitutedKey):
        clients[0].share_keys([stale if a.client_id == 1 else a for a in ads])


def test_different_survivor_sets_sent_to_different_clients_abort_the_round(tmp_path):
    session = _session()
    clients, _, _, _ = _through_masking(tmp_path, session)
    # The server claims client 3 survived to {0, 1, 2, 3} (to get its self-mask seed) and
    # dropped to {4, 5} (to get its mask key): both secrets would unmask its input.
    told_alive = UnmaskRequest(tuple(range(N)), ())
    told_dropped = UnmaskRequest((0, 1, 2, 4, 5), (3,))
    group_a = {c: clients[c].confirm(told_alive) for c in (0, 1, 2, 3)}
    group_b = {c: clients[c].confirm(told_dropped) for c in (4, 5)}
    everything = [*group_a.values(), *group_b.values()]
    for c in (0, 4):  # relayed faithfully, the confirmations disagree
        request = told_alive if c == 0 else told_dropped
        with pytest.raises(InconsistentView, match="different survivor sets"):
            clients[c].unmask(request, everything)
    # Relayed selectively, group B cannot gather t = 4 confirmations of its request, so
    # client 3's mask key is never revealed.
    for c in (4, 5):
        with pytest.raises(InconsistentView, match="2 of its share holders confirmed"):
            clients[c].unmask(told_dropped, list(group_b.values()))
    # A client never signs two different requests, even rebuilt from its state store.
    rebuilt = _client(tmp_path, session, 4)
    rebuilt.share_keys([c.advertise() for c in clients.values()])
    with pytest.raises(InconsistentView, match="already confirmed another survivor set"):
        rebuilt.confirm(told_alive)
    # A forged confirmation (signed by anyone but the client) is refused.
    forged = type(group_a[1])(1, told_alive, Ed25519PrivateKey.generate().sign(b"x"))
    with pytest.raises(InconsistentView, match="confirmation of client 1 does not verify"):
        clients[0].unmask(told_alive, [group_a[0], forged, group_a[2], group_a[3]])


def test_a_rebuilt_client_still_refuses_a_second_conflicting_request(tmp_path):
    session = _session()
    clients, server, ads, inbox = _through_masking(tmp_path, session)
    first = UnmaskRequest((0, 1, 2, 4, 5), (3,))
    confirmations = [clients[c].confirm(first) for c in (0, 1, 2, 4, 5)]
    answer = clients[0].unmask(first, confirmations)
    assert 3 in answer.mask_key_shares
    # The task is retried: a new client object, rebuilt from the state store.
    rebuilt = _client(tmp_path, session, 0)
    rebuilt.share_keys(ads)
    rebuilt.receive_shares(inbox[0])
    assert rebuilt.unmask(first, confirmations) == answer  # the same request: same answer
    second = UnmaskRequest(tuple(range(N)), ())  # now 3 "survived": its seed is asked for
    with pytest.raises(UnsafeRequest, match="already answered"):
        rebuilt.unmask(second, confirmations)


def test_a_client_that_lost_its_state_cannot_rejoin_the_session(tmp_path):
    session = _session()
    with pytest.raises(ProtocolAbort, match="has no state for session"):
        _client(tmp_path, session, 2)


def test_no_key_and_nonce_pair_repeats_across_sessions(tmp_path):
    """Two sessions (as two runs with the same seed): every share is encrypted under a key
    of its own session and a nonce of its (sender, recipient), so no (key, nonce) repeats."""
    used = set()
    for run in range(2):
        session = _session()
        clients = {c: _client(tmp_path / f"run{run}", session, c, fresh=True) for c in range(N)}
        ads = [c.advertise() for c in clients.values()]
        for c in clients.values():
            c.share_keys(ads)
            for other in range(N):
                if other != c.client_id:
                    key = c._share_key(other)
                    used.add((key, nonce_of(c.client_id, other)))
    assert len(used) == 2 * N * (N - 1)  # within a session each direction has its nonce
    keys = {k for k, _ in used}
    assert len(keys) == 2 * N * (N - 1) // 2  # one key per pair and session, never shared
    assert primitives.KEY_BYTES == 32
