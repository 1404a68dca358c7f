"""The client side of secure aggregation: one object per client and round, answering the
server's steps. Its round secrets come from 32 bytes of client entropy (os.urandom, kept
in the client's state store); with a signing identity and a directory of the clients'
registered signing keys it runs the active-adversary variant of Bonawitz et al. (2017):
signed key advertisements, and a consistency check of the survivor set before any reveal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedpipe.secagg import primitives, shamir
from fedpipe.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    SurvivorConfirmation,
    UnmaskRequest,
    UnmaskResponse,
    request_bytes,
)
from fedpipe.secagg.session import (
    InconsistentView,
    ProtocolAbort,
    Session,
    SubstitutedKey,
    TamperedShare,
    ThresholdNotMet,
    UnsafeRequest,
)


class Journal(Protocol):
    """Where a client records what it has confirmed and revealed in a session, so that a
    rebuilt client (a retried task) still refuses a second, conflicting request."""

    def get(self, key: str) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...


class MemoryJournal(dict):
    """A journal that lives as long as the client object (tests, in-process rounds)."""

    def put(self, key: str, value: Any) -> None:
        self[key] = value


def share_point(client: int) -> int:
    """The x coordinate of the shares a client holds (never 0, where the secret sits)."""
    return client + 1


def nonce_of(sender: int, recipient: int) -> bytes:
    """The 96-bit GCM nonce of the one message from `sender` to `recipient`. The key is
    fresh per session (new X25519 keys, and the session id in its HKDF label) and both
    directions of a pair share it, so (sender, recipient) never repeats under one key."""
    return sender.to_bytes(6, "big") + recipient.to_bytes(6, "big")


def pairwise_sign(client: int, other: int) -> int:
    """The lower id adds the pairwise mask and the higher id subtracts it, so they cancel."""
    return 1 if client < other else -1


class SecAggClient:
    """A client in one round. `entropy` is the client's private randomness (os.urandom;
    seeded only in the reproducible-simulation research mode). With `identity` (its
    long-term Ed25519 key) it signs what it sends; with `directory` (client id -> registered
    Ed25519 public key, the PKI) it verifies what the server relays and requires the
    consistency check before revealing shares."""

    def __init__(
        self,
        session: Session,
        client_id: int,
        entropy: bytes,
        *,
        identity: Ed25519PrivateKey | None = None,
        directory: Mapping[int, bytes] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.session, self.client_id = session, client_id
        self._identity, self._directory = identity, directory
        self._journal: Journal = MemoryJournal() if journal is None else journal
        self._cipher_key, self.cipher_public_key = primitives.keypair(
            primitives.derive(entropy, b"cipher-key")
        )
        self._mask_key_bytes = primitives.derive(entropy, b"mask-key")
        self._mask_key, self.mask_public_key = primitives.keypair(self._mask_key_bytes)
        self._self_mask_seed = primitives.derive(entropy, b"self-mask")
        self._share_stream = Cipher(
            algorithms.ChaCha20(primitives.derive(entropy, b"shamir"), bytes(16)), mode=None
        ).encryptor()
        self._advertised: dict[int, KeyAdvertisement] = {}
        self._held: dict[int, tuple[int, int]] = {}  # owner -> (self-mask share, mask-key share)
        self._masked_with: tuple[int, ...] = ()

    def advertise(self) -> KeyAdvertisement:
        ad = KeyAdvertisement(self.client_id, self.cipher_public_key, self.mask_public_key)
        if self._identity is None:
            return ad
        context = self.session.label("advertise", self.client_id)
        signature = primitives.sign(self._identity, ad.signed_bytes(context))
        return KeyAdvertisement(ad.client_id, ad.cipher_public_key, ad.mask_public_key, signature)

    def _registered_key(self, client: int) -> bytes:
        assert self._directory is not None
        key = self._directory.get(client)
        if key is None:
            raise SubstitutedKey(
                f"client {self.client_id}: client {client} has no registered signing key"
            )
        return key

    def _check_advertisement(self, ad: KeyAdvertisement) -> None:
        """Refuse keys the server may have substituted: the signature must verify under
        the advertiser's registered key, for this session and round."""
        if self._directory is None:
            return
        context = self.session.label("advertise", ad.client_id)
        if not primitives.verify(
            self._registered_key(ad.client_id), ad.signature, ad.signed_bytes(context)
        ):
            raise SubstitutedKey(
                f"client {self.client_id}: the key advertisement of client {ad.client_id} "
                f"(session {self.session.session_id}, round {self.session.round_number}) does "
                "not verify under its registered signing key: the server substituted or "
                "altered its keys; round aborted"
            )

    def share_keys(self, advertisements: list[KeyAdvertisement]) -> KeyShares:
        """Split the self-mask seed and the mask key among the neighbours that advertised
        keys (and itself), and encrypt each neighbour's shares for it alone."""
        me = self.client_id
        neighbours = set(self.session.neighbours[me])
        self._advertised = {a.client_id: a for a in advertisements if a.client_id in neighbours}
        for ad in self._advertised.values():
            self._check_advertisement(ad)
        holders = sorted({me, *self._advertised})
        threshold = self.session.threshold(me)
        if len(holders) < threshold:
            raise ThresholdNotMet(
                f"client {me}: {len(holders)} share holders advertised keys, threshold {threshold}"
            )
        xs = [share_point(h) for h in holders]
        random_bytes = self._random_bytes
        seed_shares = shamir.split(_as_int(self._self_mask_seed), threshold, xs, random_bytes)
        key_shares = shamir.split(_as_int(self._mask_key_bytes), threshold, xs, random_bytes)
        self._held[me] = (seed_shares[share_point(me)], key_shares[share_point(me)])
        encrypted = []
        for h in holders:
            if h == me:
                continue
            x = share_point(h)
            plaintext = _element(seed_shares[x]) + _element(key_shares[x])
            encrypted.append(
                EncryptedShare(
                    me,
                    h,
                    primitives.encrypt(
                        self._share_key(h), nonce_of(me, h), plaintext, self._share_context(me, h)
                    ),
                )
            )
        return KeyShares(me, tuple(encrypted))

    def receive_shares(self, inbox: list[EncryptedShare]) -> None:
        """Decrypt and keep the shares the server routed here; their senders are the
        neighbours this client masks with."""
        me = self.client_id
        for share in inbox:
            if share.recipient != me or share.sender not in self._advertised:
                raise ProtocolAbort(
                    f"client {me} got a share from {share.sender} to {share.recipient}, "
                    "which is not one of its neighbours' shares for it"
                )
            try:
                plaintext = primitives.decrypt(
                    self._share_key(share.sender),
                    nonce_of(share.sender, me),
                    share.ciphertext,
                    self._share_context(share.sender, me),
                )
            except primitives.InvalidTag as e:
                raise TamperedShare(share.sender, me) from e
            size = shamir.SHARE_BYTES
            self._held[share.sender] = (_as_int(plaintext[:size]), _as_int(plaintext[size:]))
        self._masked_with = tuple(sorted(s.sender for s in inbox))
        threshold = self.session.threshold(me)
        if len(self._masked_with) + 1 < threshold:
            raise ThresholdNotMet(
                f"client {me}: shares arrived from {len(self._masked_with)} neighbours, "
                f"threshold {threshold}"
            )

    def masked_input(self, encoded: np.ndarray) -> MaskedInput:
        """The encoded update plus the self mask and one pairwise mask per neighbour whose
        shares arrived (added by the lower id, subtracted by the higher)."""
        me, session = self.client_id, self.session
        if encoded.shape != (session.vector_length,) or encoded.dtype != session.encoding.word:
            raise ValueError(
                f"encoded update {encoded.dtype}{encoded.shape} does not match the session "
                f"({session.encoding.word}, ({session.vector_length},))"
            )
        masked = encoded.copy()
        masks = [(self._self_mask_seed, 1)]
        masks += [(self._pairwise_seed(o), pairwise_sign(me, o)) for o in self._masked_with]
        primitives.add_masks(masked, masks)
        return MaskedInput(me, masked)

    def confirm(self, request: UnmaskRequest) -> SurvivorConfirmation:
        """The consistency check's first half: sign the request this client was sent. A
        client signs one request per session (recorded in its journal), so a server cannot
        collect its signature on two different survivor sets."""
        me = self.client_id
        if self._identity is None:
            raise ProtocolAbort(f"client {me} has no signing identity for the consistency check")
        earlier = self._journal.get("confirmed")
        if earlier is not None and earlier != request.to_dict():
            raise InconsistentView(
                f"client {me} already confirmed another survivor set this session "
                f"({earlier['survivors']}); refusing to sign {list(request.survivors)}"
            )
        self._journal.put("confirmed", request.to_dict())
        context = self.session.label("confirm", me)
        return SurvivorConfirmation(
            me, request, primitives.sign(self._identity, request_bytes(request, context))
        )

    def _check_consistency(
        self, request: UnmaskRequest, confirmations: list[SurvivorConfirmation] | None
    ) -> None:
        """The consistency check's second half: every confirmation relayed must verify and
        be of the same request, and at least t of this client's share holders (itself
        included) must have confirmed it."""
        if self._directory is None:
            return
        me = self.client_id
        if confirmations is None:
            raise InconsistentView(f"client {me}: no survivor confirmations came with the request")
        signed: set[int] = set()
        for c in confirmations:
            context = self.session.label("confirm", c.client_id)
            if not primitives.verify(
                self._registered_key(c.client_id), c.signature, request_bytes(c.request, context)
            ):
                raise InconsistentView(
                    f"client {me}: the survivor confirmation of client {c.client_id} does not "
                    "verify under its registered signing key (forged); round aborted"
                )
            if c.request != request:
                raise InconsistentView(
                    f"client {me} was told survivors {list(request.survivors)} but client "
                    f"{c.client_id} was told {list(c.request.survivors)} (dropped "
                    f"{list(c.request.dropped)}): the server sent different survivor sets to "
                    "different clients; round aborted"
                )
            signed.add(c.client_id)
        holders = set(request.survivors) & {me, *self._masked_with}
        threshold = self.session.threshold(me)
        if len(holders & signed) < threshold:
            raise InconsistentView(
                f"client {me}: {len(holders & signed)} of its share holders confirmed the "
                f"survivor set, threshold {threshold}"
            )

    def unmask(
        self,
        request: UnmaskRequest,
        confirmations: list[SurvivorConfirmation] | None = None,
    ) -> UnmaskResponse:
        """Reveal self-mask shares of survivors and mask-key shares of dropped clients,
        refusing any request that could unmask one client's input. The same request asked
        again (a retried task) gets the same answer; any other request is refused."""
        me = self.client_id
        survivors, dropped = set(request.survivors), set(request.dropped)
        answered = self._journal.get("answered")
        if answered is not None:
            if answered["request"] == request.to_dict():
                return UnmaskResponse.from_dict(answered["response"])
            raise UnsafeRequest(f"client {me} already answered an unmasking request this round")
        if both := sorted(survivors & dropped):
            raise UnsafeRequest(
                f"client {me} refuses: clients {both} are listed as both survivors and dropped, "
                "which would reveal both of their secrets"
            )
        if me not in survivors:
            raise UnsafeRequest(f"client {me} sent its masked input but is not listed a survivor")
        known_survivors = survivors & {me, *self._masked_with}
        known_dropped = dropped & set(self._masked_with)
        threshold = self.session.threshold(me)
        if len(known_survivors) < threshold:
            raise ThresholdNotMet(
                f"client {me}: {len(known_survivors)} of its share holders survived, "
                f"threshold {threshold}"
            )
        self._check_consistency(request, confirmations)
        response = UnmaskResponse(
            me,
            {o: self._held[o][0] for o in sorted(known_survivors)},
            {o: self._held[o][1] for o in sorted(known_dropped)},
        )
        self._journal.put(
            "answered", {"request": request.to_dict(), "response": response.to_dict()}
        )
        return response

    def _random_bytes(self, n: int) -> bytes:
        return self._share_stream.update(bytes(n))

    def _share_key(self, other: int) -> bytes:
        pair = sorted((self.client_id, other))
        return primitives.agree(
            self._cipher_key,
            self._advertised[other].cipher_public_key,
            self.session.label("share-key", *pair),
        )

    def _share_context(self, sender: int, recipient: int) -> bytes:
        return self.session.label("share", sender, recipient)

    def _pairwise_seed(self, other: int) -> bytes:
        pair = sorted((self.client_id, other))
        return primitives.agree(
            self._mask_key,
            self._advertised[other].mask_public_key,
            self.session.label("mask", *pair),
        )


def _as_int(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _element(value: int) -> bytes:
    return value.to_bytes(shamir.SHARE_BYTES, "big")
