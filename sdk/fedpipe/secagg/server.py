"""The server side of secure aggregation: it routes the clients' messages, decides who
survived, and from the survivors' shares removes every mask from the sum, learning
nothing but the sum of the survivors' encoded updates."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from fedpipe.secagg import primitives, shamir
from fedpipe.secagg.client import pairwise_sign, share_point
from fedpipe.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
)
from fedpipe.secagg.session import ProtocolAbort, Session, ThresholdNotMet


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A message the server set aside, with the client and the reason."""

    client_id: int
    reason: str


class SecAggServer:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.advertised: dict[int, KeyAdvertisement] = {}
        self.shared: set[int] = set()  # U2: clients whose shares were routed
        self.masked_with: dict[int, set[int]] = {}  # client -> senders of the shares it got
        self.survivors: set[int] = set()  # U3: clients whose masked input is in the sum
        self._sum = np.zeros(session.vector_length, dtype=session.encoding.word)
        self.request: UnmaskRequest | None = None
        self.refusals: list[Refusal] = []

    def receive_advertisements(
        self, advertisements: list[KeyAdvertisement]
    ) -> list[KeyAdvertisement]:
        """Step 1: keep one advertisement per cohort client; all of them go to every client."""
        for ad in advertisements:
            if ad.client_id not in self.session.neighbours:
                self.refusals.append(Refusal(ad.client_id, "not in this round's cohort"))
            elif ad.client_id in self.advertised:
                self.refusals.append(Refusal(ad.client_id, "advertised keys twice"))
            else:
                self.advertised[ad.client_id] = ad
        return [self.advertised[c] for c in sorted(self.advertised)]

    def route_shares(self, key_shares: list[KeyShares]) -> dict[int, list[EncryptedShare]]:
        """Step 2: each client's inbox of encrypted shares. A share goes through only if the
        pair exchanged shares both ways, so every pairwise mask is added by both or neither."""
        sent: dict[tuple[int, int], EncryptedShare] = {}
        for message in key_shares:
            if message.client_id not in self.advertised:
                self.refusals.append(Refusal(message.client_id, "shared keys without advertising"))
                continue
            for s in message.shares:
                if s.sender == message.client_id and s.recipient in self.advertised:
                    sent[(s.sender, s.recipient)] = s
        inbox: dict[int, list[EncryptedShare]] = {c: [] for c in sorted(self.advertised)}
        for (sender, recipient), share in sorted(sent.items()):
            if (recipient, sender) in sent:
                inbox[recipient].append(share)
        self.masked_with = {c: {s.sender for s in shares} for c, shares in inbox.items()}
        self.shared = {m.client_id for m in key_shares if m.client_id in self.advertised}
        return inbox

    def request_unmasking(self, inputs: Iterable[MaskedInput]) -> UnmaskRequest:
        """Step 3 ends: survivors are the clients whose masked input arrived well-formed
        (each is added to the running sum as it arrives); the dropped are those that shared
        keys but sent none. Aborts if some client's secret could not be recovered from its
        surviving share holders."""
        session = self.session
        for m in inputs:
            if m.client_id not in self.shared:
                self.refusals.append(Refusal(m.client_id, "masked input without shared keys"))
            elif m.client_id in self.survivors:
                self.refusals.append(Refusal(m.client_id, "sent more than one masked input"))
            elif (
                m.vector.shape != (session.vector_length,)
                or m.vector.dtype != session.encoding.word
            ):
                self.refusals.append(
                    Refusal(m.client_id, f"masked input {m.vector.dtype}{m.vector.shape} malformed")
                )
            else:
                self.survivors.add(m.client_id)
                self._sum += m.vector
        survivors = self.survivors
        dropped = self.shared - survivors
        for owner in sorted(self.shared):
            holders = (self.masked_with[owner] | {owner}) & survivors
            if len(holders) < session.threshold(owner):
                raise ThresholdNotMet(
                    f"round {session.round_number}: client {owner}'s secrets need "
                    f"{session.threshold(owner)} surviving share holders, only {len(holders)} "
                    f"survived ({len(survivors)} of {len(session.neighbours)} clients sent "
                    "masked inputs)"
                )
        self.request = UnmaskRequest(tuple(sorted(survivors)), tuple(sorted(dropped)))
        return self.request

    def unmask_sum(self, responses: list[UnmaskResponse]) -> np.ndarray:
        """Step 4: the sum of the survivors' encoded updates (mod 2^word_bits)."""
        if self.request is None:
            raise ProtocolAbort("unmasking before the masked inputs were collected")
        session = self.session
        survivors, dropped = self.request.survivors, self.request.dropped
        seed_shares: dict[int, dict[int, int]] = {c: {} for c in survivors}
        key_shares: dict[int, dict[int, int]] = {c: {} for c in dropped}
        for r in responses:
            if r.client_id not in survivors:
                self.refusals.append(Refusal(r.client_id, "unmasking response from a non-survivor"))
                continue
            for owner, y in r.self_mask_shares.items():
                if owner in seed_shares and r.client_id in self.masked_with[owner] | {owner}:
                    seed_shares[owner][share_point(r.client_id)] = y
            for owner, y in r.mask_key_shares.items():
                if owner in key_shares and r.client_id in self.masked_with[owner]:
                    key_shares[owner][share_point(r.client_id)] = y
        # Every mask to remove, as (seed, sign): the survivors' self masks, and each dropped
        # client's pairwise masks with its surviving neighbours (which those added).
        masks = [
            (self._recover(client, seed_shares[client], "self-mask seed"), -1)
            for client in survivors
        ]
        for client in dropped:
            mask_key, public = primitives.keypair(
                self._recover(client, key_shares[client], "mask key")
            )
            if public != self.advertised[client].mask_public_key:
                raise ProtocolAbort(
                    f"recovered mask key of client {client} does not match its keys"
                )
            for other in sorted(self.masked_with[client] & set(survivors)):
                seed = primitives.agree(
                    mask_key,
                    self.advertised[other].mask_public_key,
                    session.label("mask", *sorted((client, other))),
                )
                masks.append((seed, -pairwise_sign(other, client)))
        total = self._sum.copy()
        primitives.add_masks(total, masks)  # streamed in chunks, over every core
        return total

    def _recover(self, owner: int, shares: dict[int, int], what: str) -> bytes:
        threshold = self.session.threshold(owner)
        if len(shares) < threshold:
            raise ThresholdNotMet(
                f"round {self.session.round_number}: {len(shares)} shares of client {owner}'s "
                f"{what} came back, {threshold} needed"
            )
        return shamir.reconstruct(shares, threshold).to_bytes(primitives.KEY_BYTES, "big")
