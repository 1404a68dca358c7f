"""The four steps of the protocol as plain, serialisable messages.

Clients and the server exchange only these, so the same code runs whether clients are
simulated inside pipeline tasks or are remote agents. Bytes travel as hex and field
elements as hex strings in JSON; a masked vector travels as an array in a bundle.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class KeyAdvertisement:
    """Step 1 (client -> server -> neighbours): the client's two public keys."""

    client_id: int
    cipher_public_key: bytes  # agrees the keys that encrypt shares
    mask_public_key: bytes  # agrees the seeds of pairwise masks
    signature: bytes = b""  # Ed25519, by the client's long-term identity, over signed_bytes
    # What certifies the signing key, when the clients do not share a PKI directory: an
    # agent's client certificate (PEM), which the federation CA issued.
    certificate: bytes = b""

    def signed_bytes(self, context: bytes) -> bytes:
        """What the client signs: the session context (session id, round, client) and
        both public keys."""
        return context + b"|" + self.cipher_public_key + self.mask_public_key

    def to_dict(self) -> dict[str, Any]:
        d = {
            "client_id": self.client_id,
            "cipher_public_key": self.cipher_public_key.hex(),
            "mask_public_key": self.mask_public_key.hex(),
            "signature": self.signature.hex(),
        }
        if self.certificate:
            d["certificate"] = self.certificate.decode("ascii")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeyAdvertisement:
        return cls(
            d["client_id"],
            bytes.fromhex(d["cipher_public_key"]),
            bytes.fromhex(d["mask_public_key"]),
            bytes.fromhex(d.get("signature", "")),
            d.get("certificate", "").encode("ascii"),
        )


@dataclasses.dataclass(frozen=True)
class EncryptedShare:
    """One client's shares of its two secrets for one neighbour, AES-GCM encrypted under
    their agreed key; the server routes it and cannot read it."""

    sender: int
    recipient: int
    ciphertext: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "recipient": self.recipient,
            "ciphertext": self.ciphertext.hex(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncryptedShare:
        return cls(d["sender"], d["recipient"], bytes.fromhex(d["ciphertext"]))


@dataclasses.dataclass(frozen=True)
class KeyShares:
    """Step 2 (client -> server): the encrypted shares for each of the client's neighbours."""

    client_id: int
    shares: tuple[EncryptedShare, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "shares": [s.to_dict() for s in self.shares]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeyShares:
        return cls(d["client_id"], tuple(EncryptedShare.from_dict(s) for s in d["shares"]))


@dataclasses.dataclass(frozen=True)
class MaskedInput:
    """Step 3 (client -> server): the encoded update plus the self mask and pairwise masks,
    a vector of words uniform modulo 2^word_bits."""

    client_id: int
    vector: np.ndarray


@dataclasses.dataclass(frozen=True)
class UnmaskRequest:
    """Step 4 (server -> clients): who sent a masked input and who dropped after sharing
    keys. A client in both lists would let the server unmask its input: honest clients
    refuse such a request."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"survivors": list(self.survivors), "dropped": list(self.dropped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnmaskRequest:
        return cls(tuple(d["survivors"]), tuple(d["dropped"]))


@dataclasses.dataclass(frozen=True)
class SurvivorConfirmation:
    """The consistency check (Bonawitz et al. 2017, active adversary): a client's
    signature over the unmasking request it was sent. Before revealing anything, every
    client checks that enough of its share holders signed the very same request."""

    client_id: int
    request: UnmaskRequest
    signature: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "request": self.request.to_dict(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SurvivorConfirmation:
        return cls(
            d["client_id"], UnmaskRequest.from_dict(d["request"]), bytes.fromhex(d["signature"])
        )


def request_bytes(request: UnmaskRequest, context: bytes) -> bytes:
    """The canonical bytes of a request under a session context, as signed."""
    survivors = ",".join(map(str, sorted(request.survivors)))
    dropped = ",".join(map(str, sorted(request.dropped)))
    return context + f"|survivors={survivors}|dropped={dropped}".encode()


@dataclasses.dataclass(frozen=True)
class UnmaskResponse:
    """Step 4 (client -> server): shares of the self-mask seeds of survivors and of the
    mask keys of dropped clients, never both for one client."""

    client_id: int
    self_mask_shares: dict[int, int]  # owner -> share y at x = client_id + 1
    mask_key_shares: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "self_mask_shares": {str(k): hex(v) for k, v in self.self_mask_shares.items()},
            "mask_key_shares": {str(k): hex(v) for k, v in self.mask_key_shares.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnmaskResponse:
        return cls(
            d["client_id"],
            {int(k): int(v, 16) for k, v in d["self_mask_shares"].items()},
            {int(k): int(v, 16) for k, v in d["mask_key_shares"].items()},
        )
