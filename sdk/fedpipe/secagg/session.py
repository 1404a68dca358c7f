"""The public parameters of one round of secure aggregation, which the server and every
client derive identically from the run config: cohort, neighbour graph, thresholds and
the fixed-point encoding. Also the errors the protocol raises."""

from __future__ import annotations

import dataclasses
import math
import secrets

from fedpipe.secagg.quantization import FixedPoint


class ProtocolAbort(RuntimeError):
    """The round cannot finish securely; the previous global model stands."""


class ThresholdNotMet(ProtocolAbort):
    """Too few clients are left to recover a secret (or to start): the round aborts."""


class TamperedShare(ProtocolAbort):
    """An encrypted share failed authentication: it was altered or misrouted."""

    def __init__(self, sender: int, recipient: int) -> None:
        self.sender, self.recipient = sender, recipient
        super().__init__(f"share from client {sender} to client {recipient} failed authentication")


class UnsafeRequest(ProtocolAbort):
    """An unmasking request that an honest client refuses to answer."""


class SubstitutedKey(ProtocolAbort):
    """A key advertisement whose signature does not verify under the client's registered
    signing key: the server (or someone on the path) substituted or altered the keys."""


class InconsistentView(ProtocolAbort):
    """The clients were told different survivor sets (or a confirmation is forged): the
    server tried to learn both secrets of some client. Nothing is revealed."""


@dataclasses.dataclass(frozen=True)
class Session:
    round_number: int
    neighbours: dict[int, tuple[int, ...]]  # every cohort client -> the clients it masks with
    threshold_fraction: float  # of a client's share holders (its neighbours and itself)
    encoding: FixedPoint
    vector_length: int  # words of an encoded update: the delta plus the example count
    # A fresh random id per round (chosen by the server, written in the round plan): every
    # derived key, nonce context and signature is bound to it, so nothing repeats across
    # rounds or runs.
    session_id: str = dataclasses.field(default_factory=lambda: secrets.token_hex(16))

    @property
    def clients(self) -> tuple[int, ...]:
        return tuple(sorted(self.neighbours))

    def holders(self, client: int) -> tuple[int, ...]:
        """The clients that receive shares of `client`'s secrets (itself included)."""
        return tuple(sorted({client, *self.neighbours[client]}))

    def threshold(self, client: int) -> int:
        """t: how many of the holders must answer to recover one of `client`'s secrets."""
        return max(1, math.ceil(self.threshold_fraction * len(self.holders(client)) - 1e-9))

    def label(self, purpose: str, *ids: int) -> bytes:
        """Context bound into every derived key, ciphertext and signature: purpose,
        session, round, parties."""
        parties = "/".join(map(str, ids))
        return f"fedpipe-secagg/{purpose}/{self.session_id}/{self.round_number}/{parties}".encode()
