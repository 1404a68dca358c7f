"""Secure aggregation (Bonawitz et al., CCS 2017) with the SecAgg+ sparse neighbour graph
(Bell et al., CCS 2020): the server learns only the sum of the clients' updates, and the
sum survives clients that drop after sharing their keys."""

from fedpipe.secagg.client import Journal, MemoryJournal, SecAggClient
from fedpipe.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    SurvivorConfirmation,
    UnmaskRequest,
    UnmaskResponse,
)
from fedpipe.secagg.quantization import (
    FixedPoint,
    NonFiniteUpdate,
    UpdateTransform,
    no_transform,
)
from fedpipe.secagg.server import Refusal, SecAggServer
from fedpipe.secagg.session import (
    InconsistentView,
    ProtocolAbort,
    Session,
    SubstitutedKey,
    TamperedShare,
    ThresholdNotMet,
    UnsafeRequest,
)

__all__ = [
    "EncryptedShare",
    "FixedPoint",
    "InconsistentView",
    "Journal",
    "KeyAdvertisement",
    "KeyShares",
    "MaskedInput",
    "MemoryJournal",
    "NonFiniteUpdate",
    "ProtocolAbort",
    "Refusal",
    "SecAggClient",
    "SecAggServer",
    "Session",
    "SubstitutedKey",
    "SurvivorConfirmation",
    "TamperedShare",
    "ThresholdNotMet",
    "UnmaskRequest",
    "UnmaskResponse",
    "UnsafeRequest",
    "UpdateTransform",
    "no_transform",
]
