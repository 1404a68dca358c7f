"""The client side of secure aggregation: one object per client and round, answering the
server's four steps. All its secrets come from 32 bytes of client entropy."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedpipe.secagg import primitives, shamir
from fedpipe.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
)
from fedpipe.secagg.session import (
    ProtocolAbort,
    Session,
    TamperedShare,
    ThresholdNotMet,
    UnsafeRequest,
)


def share_point(client: int) -> int:
    """The x coordinate of the shares a client holds (never 0, where the secret sits)."""
    return client + 1


def nonce_of(sender: int) -> bytes:
    """Both directions of a pair use one key, so the sender's id makes the nonce unique."""
    return sender.to_bytes(12, "big")


def pairwise_sign(client: int, other: int) -> int:
    """The lower id adds the pairwise mask and the higher id subtracts it, so they cancel."""
    return 1 if client < other else -1


class SecAggClient:
    """A client in one round. `entropy` is the client's private randomness (os.urandom on a
    real device; a seeded derivation in the simulation, for reproducible runs)."""

    def __init__(self, session: Session, client_id: int, entropy: bytes) -> None:
        self.session, self.client_id = session, client_id
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
        self._answered = False

    def advertise(self) -> KeyAdvertisement:
        return KeyAdvertisement(self.client_id, self.cipher_public_key, self.mask_public_key)

    def share_keys(self, advertisements: list[KeyAdvertisement]) -> KeyShares:
        """Split the self-mask seed and the mask key among the neighbours that advertised
        keys (and itself), and encrypt each neighbour's shares for it alone."""
        me = self.client_id
        neighbours = set(self.session.neighbours[me])
        self._advertised = {a.client_id: a for a in advertisements if a.client_id in neighbours}
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
                        self._share_key(h), nonce_of(me), plaintext, self._share_context(me, h)
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
                    nonce_of(share.sender),
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

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal self-mask shares of survivors and mask-key shares of dropped clients,
        refusing any request that could unmask one client's input."""
        me = self.client_id
        survivors, dropped = set(request.survivors), set(request.dropped)
        if self._answered:
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
        self._answered = True
        return UnmaskResponse(
            me,
            {o: self._held[o][0] for o in sorted(known_survivors)},
            {o: self._held[o][1] for o in sorted(known_dropped)},
        )

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
