"""The secure aggregation protocol: exact sums, dropout recovery, aborts and refusals."""

import hashlib
import json
import secrets

import numpy as np
import pytest
from scipy import stats

from fedpipe.secagg import (
    FixedPoint,
    KeyShares,
    SecAggClient,
    SecAggServer,
    Session,
    TamperedShare,
    ThresholdNotMet,
    UnmaskRequest,
    UnmaskResponse,
    UnsafeRequest,
    graph,
    messages,
    shamir,
)
from fedpipe.secagg.in_process import run_round
from fedpipe.secagg.quantization import LOSS_RANGE, TRAILING_WORDS


def entropy(client: int) -> bytes:
    return hashlib.sha256(f"test-client-{client}".encode()).digest()


def make_session(n: int, k: int | None = None, size: int = 500, threshold: float = 0.6) -> Session:
    clients = list(range(n))
    neighbours = graph.complete(clients) if k is None else graph.random_regular(clients, k, 7, 1)
    return Session(1, neighbours, threshold, FixedPoint(1.0, 20, 4096, n), size + TRAILING_WORDS)


def encoded_updates(session: Session, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = session.vector_length - TRAILING_WORDS
    return {
        c: session.encoding.encode(rng.normal(0, 0.5, size), int(rng.integers(1, 400)))
        for c in session.clients
    }


def plain_sum(encoded: dict[int, np.ndarray], clients) -> np.ndarray:
    total = np.zeros_like(next(iter(encoded.values())))
    for c in clients:
        total += encoded[c]
    return total


def test_shamir_any_t_shares_recover_the_secret_and_fewer_do_not():
    secret = int.from_bytes(secrets.token_bytes(32), "big")
    shares = shamir.split(secret, 4, range(1, 8), secrets.token_bytes)
    for subset in ([1, 2, 3, 4], [7, 5, 3, 1], [2, 4, 6, 7]):
        assert shamir.reconstruct({x: shares[x] for x in subset}, 4) == secret
    assert shamir.reconstruct({x: shares[x] for x in [1, 2, 3]}, 3) != secret
    with pytest.raises(ValueError, match="cannot recover"):
        shamir.reconstruct({x: shares[x] for x in [1, 2, 3]}, 4)
    with pytest.raises(ValueError, match="non-zero"):
        shamir.split(secret, 2, [0, 1, 2], secrets.token_bytes)


@pytest.mark.parametrize("k", [None, 4], ids=["secagg", "secagg+"])
def test_unmasked_sum_equals_the_plaintext_quantized_sum_exactly(k):
    session = make_session(12, k)
    encoded = encoded_updates(session)
    run = run_round(session, encoded.__getitem__, entropy)
    assert run.dropped == () and run.survivors == session.clients
    assert np.array_equal(run.summed, plain_sum(encoded, session.clients))


def test_fixed_point_gives_the_weighted_mean_and_the_cohort_sum_cannot_wrap():
    enc = FixedPoint(clip=2.0, fractional_bits=16, max_examples=1000, cohort_size=50)
    assert enc.bits <= 32 and enc.word == np.uint32
    rng = np.random.default_rng(1)
    deltas = [rng.normal(0, 1, 300) for _ in range(50)]
    counts = [int(c) for c in rng.integers(1, 1500, 50)]  # some above max_examples saturate
    summed = sum(enc.encode(d, n) for d, n in zip(deltas, counts, strict=True))
    mean, total = enc.decode_mean(summed)
    weights = np.minimum(counts, 1000)
    expected = sum(w * np.clip(d, -2, 2) for w, d in zip(weights, deltas, strict=True))
    assert total == weights.sum()
    assert np.abs(mean - expected / weights.sum()).max() < 50 * 2**-16
    extreme = sum(enc.encode(np.full(300, 9.0), 10_000) for _ in range(50))  # all at the bounds
    assert np.allclose(enc.decode_mean(extreme)[0], 2.0)


def test_the_summed_words_give_the_weighted_mean_loss_with_no_wider_word():
    enc = FixedPoint(clip=0.5, fractional_bits=20, max_examples=4096, cohort_size=8)
    rng = np.random.default_rng(2)
    losses = [0.1, 0.7, 2.3, 0.05, 1.2, 40.0, float("nan"), 0.9]  # two past LOSS_RANGE
    counts = [int(c) for c in rng.integers(50, 900, len(losses))]
    deltas = rng.normal(0, 0.1, (len(losses), 20))
    words = [enc.encode(d, n, loss=x) for d, n, x in zip(deltas, counts, losses, strict=True)]
    counted = [min(x, LOSS_RANGE) if np.isfinite(x) else LOSS_RANGE for x in losses]
    expected = np.dot(counted, counts) / sum(counts)
    assert enc.decode_loss(sum(words)) == pytest.approx(expected, abs=1e-3)
    assert enc.bits == FixedPoint(0.5, 20, 4096, 8).bits  # no wider words for it
    # Under DP the loss stays home: the word is 0 and the server reports none.
    quiet = FixedPoint(0.5, 20, 4096, 8, carries_loss=False)
    assert quiet.encode(np.zeros(20), 100, loss=0.7)[-2] == 0
    assert quiet.decode_loss(quiet.encode(np.zeros(20), 100, loss=0.7)) is None


@pytest.mark.parametrize("k", [None, 6], ids=["secagg", "secagg+"])
def test_dropouts_after_key_sharing_are_recovered_up_to_n_minus_t(k):
    session = make_session(10, k)
    encoded = encoded_updates(session, seed=3)
    # SecAgg: t = ceil(0.6 * 10) = 6, so n - t = 4 may drop. SecAgg+ (k = 6): t = 5 of the
    # 7 holders of each secret, so any 2 may drop.
    dropped = frozenset({1, 8} if k else {0, 3, 5, 9})
    run = run_round(session, encoded.__getitem__, entropy, drop_after_sharing=dropped)
    assert set(run.dropped) == dropped
    assert np.array_equal(run.summed, plain_sum(encoded, run.survivors))


def test_below_threshold_the_round_aborts():
    session = make_session(10)
    with pytest.raises(ThresholdNotMet, match="surviving share holders"):
        run_round(
            session, encoded_updates(session).__getitem__, entropy, frozenset({0, 2, 4, 6, 8})
        )


def test_a_masked_vector_looks_uniform_and_carries_no_trace_of_the_update():
    session = make_session(5, size=20_000)
    encoded = {c: session.encoding.encode(np.zeros(20_000), 100) for c in session.clients}
    clients = {c: SecAggClient(session, c, entropy(c)) for c in session.clients}
    server = SecAggServer(session)
    ads = server.receive_advertisements([c.advertise() for c in clients.values()])
    inbox = server.route_shares([c.share_keys(ads) for c in clients.values()])
    clients[2].receive_shares(inbox[2])
    masked = clients[2].masked_input(encoded[2]).vector
    low_bytes = (masked & 0xFF).astype(np.int64)
    high_bytes = (masked >> 24).astype(np.int64)
    for observed in (low_bytes, high_bytes):
        assert stats.chisquare(np.bincount(observed, minlength=256)).pvalue > 1e-3
    # The same test sees the unmasked update at once: it is (almost) all zeros.
    assert stats.chisquare(np.bincount(encoded[2] & 0xFF, minlength=256)).pvalue < 1e-100
    coordinates = masked[:-TRAILING_WORDS].astype(float)
    assert abs(stats.pearsonr(coordinates, np.arange(20_000)).statistic) < 0.05


def test_a_tampered_share_ciphertext_is_rejected():
    session = make_session(4)
    clients = {c: SecAggClient(session, c, entropy(c)) for c in session.clients}
    server = SecAggServer(session)
    ads = server.receive_advertisements([c.advertise() for c in clients.values()])
    shares = [c.share_keys(ads) for c in clients.values()]
    first = shares[0].shares[0]
    flipped = bytes([first.ciphertext[0] ^ 1]) + first.ciphertext[1:]
    shares[0] = KeyShares(
        0, (messages.EncryptedShare(0, first.recipient, flipped),) + shares[0].shares[1:]
    )
    inbox = server.route_shares(shares)
    with pytest.raises(TamperedShare, match=f"from client 0 to client {first.recipient}"):
        clients[first.recipient].receive_shares(inbox[first.recipient])
    # A share replayed to another recipient fails authentication too.
    misrouted = messages.EncryptedShare(0, 3, shares[0].shares[1].ciphertext)
    clients[3].share_keys(ads)
    with pytest.raises(TamperedShare):
        clients[3].receive_shares([misrouted])


def test_honest_clients_refuse_to_reveal_both_secrets_of_one_client():
    session = make_session(6)
    clients = {c: SecAggClient(session, c, entropy(c)) for c in session.clients}
    server = SecAggServer(session)
    ads = server.receive_advertisements([c.advertise() for c in clients.values()])
    inbox = server.route_shares([c.share_keys(ads) for c in clients.values()])
    for c in clients.values():
        c.receive_shares(inbox[c.client_id])
        c.masked_input(session.encoding.encode(np.zeros(500), 10))
    greedy = UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(3,))
    with pytest.raises(UnsafeRequest, match=r"clients \[3\] are listed as both"):
        clients[0].unmask(greedy)
    fair = UnmaskRequest(survivors=(0, 1, 2, 4, 5), dropped=(3,))
    response = clients[0].unmask(fair)
    assert 3 in response.mask_key_shares and 3 not in response.self_mask_shares
    # A second request (e.g. now claiming 3 survived) is refused: it would reveal its seed.
    with pytest.raises(UnsafeRequest, match="already answered"):
        clients[0].unmask(UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=()))


def test_secagg_plus_graph_is_seeded_symmetric_and_k_regular():
    clients = list(range(30))
    g = graph.random_regular(clients, 6, seed=5, round_number=2)
    assert g == graph.random_regular(clients, 6, seed=5, round_number=2)
    assert g != graph.random_regular(clients, 6, seed=5, round_number=3)
    assert all(len(n) == 6 and c not in n for c, n in g.items())
    assert all(c in g[o] for c, n in g.items() for o in n)
    assert graph.default_neighbours(100) == 14 and graph.default_neighbours(5) == 4


def test_messages_survive_a_json_round_trip():
    session = make_session(3)
    client = SecAggClient(session, 0, entropy(0))
    ad = client.advertise()
    shares = client.share_keys([ad, SecAggClient(session, 1, entropy(1)).advertise()])
    response = UnmaskResponse(0, {1: 2**500 + 3}, {2: 7})
    for message in (ad, shares, UnmaskRequest((0, 1), (2,)), response):
        text = json.dumps(message.to_dict())
        assert type(message).from_dict(json.loads(text)) == message
