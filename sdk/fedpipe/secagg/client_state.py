"""The client state store: what a secure-aggregation client keeps between its tasks.

With secrets from os.urandom a client can no longer be rebuilt from the run seed, so each
client keeps, in its own directory (mode 0700, files 0600, written atomically):

- `identity.key`: its long-term Ed25519 signing key (created on first use);
- `sessions/<session id>.json`: the round's 32 bytes of entropy (every round secret is
  derived from them) and its journal: the request it confirmed and the one it answered.

The public half of the identity goes to the PKI directory (`<root>/pki/<id>.pub`), the
registry of signing keys that clients trust (see docs/secure_aggregation.md: it is an
assumption of the protocol that the server cannot rewrite it). Server-side stages never
read under the root. In the simulation the root is `<run folder>/clients` (a client's
directory `<run folder>/clients/<id>`); for an agent it
is the agent's own state directory, and its signing identity is bound to its client
certificate instead (fedpipe.agents.identity): there is no shared PKI folder to trust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedpipe.artifacts.files import atomic_write
from fedpipe.secagg.client import SecAggClient
from fedpipe.secagg.session import ProtocolAbort, Session


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class PublicKeyDirectory(Mapping[int, bytes]):
    """The PKI: client id -> registered Ed25519 public key (raw 32 bytes)."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / "pki"

    def register(self, client_id: int, public_key: bytes) -> None:
        """Register a client's key once; a different key for a registered id is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        known = self.get(client_id)
        if known is not None and known != public_key:
            raise ProtocolAbort(f"client {client_id} already has another registered signing key")
        if known is None:
            atomic_write(self.path / f"{client_id}.pub", public_key.hex().encode())

    def __getitem__(self, client_id: int) -> bytes:
        try:
            return bytes.fromhex((self.path / f"{int(client_id)}.pub").read_text().strip())
        except (OSError, ValueError) as e:
            raise KeyError(client_id) from e

    def __iter__(self) -> Iterator[int]:
        return (int(p.stem) for p in sorted(self.path.glob("*.pub")))

    def __len__(self) -> int:
        return sum(1 for _ in self.path.glob("*.pub"))


class SessionJournal:
    """One client's record of one session, persisted on every change (a Journal)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str) -> Any:
        return self._read().get(key)

    def put(self, key: str, value: Any) -> None:
        data = self._read()
        data[key] = value
        atomic_write(self.path, json.dumps(data, sort_keys=True).encode())


class ClientState:
    """One client's directory in the store."""

    def __init__(self, root: str | Path, client_id: int) -> None:
        self.client_id = client_id
        self.root = Path(root)
        self.path = _private_dir(self.root / str(int(client_id)))

    def identity(self) -> Ed25519PrivateKey:
        """The long-term signing key, created (and its public key registered) on first use."""
        path = self.path / "identity.key"
        if path.exists():
            return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text()))
        key = Ed25519PrivateKey.generate()
        atomic_write(path, key.private_bytes_raw().hex().encode())
        PublicKeyDirectory(self.root).register(self.client_id, key.public_key().public_bytes_raw())
        return key

    def journal(self, session_id: str) -> SessionJournal:
        if not session_id or not all(c in "0123456789abcdef" for c in session_id):
            raise ProtocolAbort(f"session id {session_id!r} is not a hex token")
        return SessionJournal(_private_dir(self.path / "sessions") / f"{session_id}.json")

    def entropy(self, session_id: str, fresh: bytes | None = None) -> bytes:
        """The session's entropy: `fresh` is stored the first time (advertise); later
        tasks reload it. Without a stored value and nothing fresh, the client has lost its
        round state and cannot take part any more."""
        journal = self.journal(session_id)
        stored = journal.get("entropy")
        if stored is not None:
            return bytes.fromhex(stored)
        if fresh is None:
            raise ProtocolAbort(
                f"client {self.client_id} has no state for session {session_id}: it did not "
                "advertise keys in this session (or its state store was lost)"
            )
        journal.put("entropy", fresh.hex())
        return fresh

    def client(
        self,
        session: Session,
        fresh: bytes | None,
        *,
        identity: Ed25519PrivateKey,
        directory: Mapping[int, bytes],
    ) -> SecAggClient:
        """The client of a session from this store: its entropy (`fresh` is stored when
        it advertises) and its journal, with the signing identity it signs with and the
        directory of signing keys it trusts."""
        return SecAggClient(
            session,
            self.client_id,
            self.entropy(session.session_id, fresh),
            identity=identity,
            directory=directory,
            journal=self.journal(session.session_id),
        )
