"""An agent's signing identity for secure aggregation, certified by the federation CA.

Under SecAgg against an active server (Bonawitz et al. 2017) each client signs its key
advertisement and its survivor confirmation, and every other client must be able to check
that signature without trusting the server (here: the coordinator and the pipeline).

- **The key.** An agent's Ed25519 signing key is derived (HKDF-SHA256, a label of its own)
  from the private key of its client certificate, so only the holder of `client-<id>.key`
  has it, and the agent needs no second secret file.
- **The binding.** `fedpipe certs` writes the public half into the client certificate, in
  a non-critical extension (`SIGNING_KEY_OID`), so the CA's signature binds it to the
  client id of the certificate's CN. The CA key never leaves provisioning; the coordinator
  never holds it.
- **The check.** An advertisement carries its sender's certificate. A receiving agent
  trusts a signing key only from a certificate that the CA (its own `--ca` file) issued,
  valid now, whose CN names the advertised sender; anything else counts as a substituted
  key and aborts the round.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpipe.agents import provisioning
from fedpipe.secagg import KeyAdvertisement, SubstitutedKey

# A UUID-based OID (ITU-T X.667, arc 2.25): no registration needed, never reused.
SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.214404358931329914812658786651873425671")
_LABEL = b"fedpipe agent secure-aggregation signing identity v1"


def signing_key(certificate_key: ec.EllipticCurvePrivateKey) -> Ed25519PrivateKey:
    """The Ed25519 signing key that belongs to a client certificate's private key."""
    scalar = certificate_key.private_numbers().private_value.to_bytes(32, "big")
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=_LABEL).derive(scalar)
    return Ed25519PrivateKey.from_private_bytes(seed)


def signing_extension(certificate_key: ec.EllipticCurvePrivateKey) -> x509.UnrecognizedExtension:
    """The certificate extension that binds the signing key's public half."""
    public = signing_key(certificate_key).public_key().public_bytes_raw()
    return x509.UnrecognizedExtension(SIGNING_KEY_OID, public)


def certified_key(
    certificate_pem: bytes,
    client_id: int,
    authority: x509.Certificate,
    now: datetime.datetime | None = None,
) -> bytes:
    """The Ed25519 public key that `authority` certifies for `client_id`; raises
    ValueError saying why when the certificate does not certify one."""
    if not certificate_pem:
        raise ValueError("no certificate came with it")
    cert = _issued_by(certificate_pem, authority)
    now = now or datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValueError("its certificate is expired or not yet valid")
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    named = provisioning.client_id_of(str(names[0].value)) if len(names) == 1 else None
    if named != client_id:
        raise ValueError(f"its certificate names client {named}, not client {client_id}")
    try:
        extension = cert.extensions.get_extension_for_oid(SIGNING_KEY_OID).value
    except x509.ExtensionNotFound as e:
        raise ValueError("its certificate binds no signing key (provisioned before v1?)") from e
    assert isinstance(extension, x509.UnrecognizedExtension)
    if len(extension.value) != 32:
        raise ValueError("its certificate's signing key is not an Ed25519 key")
    return extension.value


@functools.lru_cache(maxsize=1024)
def _issued_by(certificate_pem: bytes, authority: x509.Certificate) -> x509.Certificate:
    """The certificate, once its CA signature checked out (kept: every protocol step of
    every round checks the same cohort's certificates again; a failed check is not kept)."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    try:
        cert.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise ValueError("its certificate was not issued by the federation CA") from e
    return cert


class CertifiedDirectory(Mapping[int, bytes]):
    """The signing keys a client trusts in a round: client id -> Ed25519 public key, from
    the certificates that came with the advertisements, each checked against the CA. A
    sender whose certificate does not check out raises SubstitutedKey with the reason."""

    def __init__(
        self,
        advertisements: Sequence[KeyAdvertisement],
        authority: x509.Certificate,
        reader: int,
    ) -> None:
        self._certificates = {a.client_id: a.certificate for a in advertisements}
        self._authority, self._reader = authority, reader

    def __getitem__(self, client_id: int) -> bytes:
        if client_id not in self._certificates:
            raise KeyError(client_id)
        try:
            return certified_key(self._certificates[client_id], client_id, self._authority)
        except ValueError as e:
            raise SubstitutedKey(
                f"client {self._reader}: the key advertisement of client {client_id} is not "
                f"certified by the federation CA ({e}): the server substituted its keys; "
                "round aborted"
            ) from e

    def __iter__(self) -> Iterator[int]:
        return iter(self._certificates)

    def __len__(self) -> int:
        return len(self._certificates)


@dataclasses.dataclass(frozen=True)
class AgentIdentity:
    """What an agent signs with and whom it trusts: its certificate (sent with its
    advertisements), the signing key derived from the certificate's key, the CA."""

    client_id: int
    certificate_pem: bytes
    key: Ed25519PrivateKey
    authority: x509.Certificate

    @classmethod
    def load(
        cls, client_id: int, cert: str | Path, key: str | Path, ca: str | Path
    ) -> AgentIdentity:
        """Load and check the agent's own credentials: its certificate must certify the
        signing key its private key derives, for its client id."""
        certificate_key = serialization.load_pem_private_key(Path(key).read_bytes(), None)
        if not isinstance(certificate_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key}: not an EC private key")
        authority = x509.load_pem_x509_certificate(Path(ca).read_bytes())
        identity = cls(client_id, Path(cert).read_bytes(), signing_key(certificate_key), authority)
        try:
            bound = certified_key(identity.certificate_pem, client_id, authority)
        except ValueError as e:
            raise ValueError(f"{cert}: cannot sign for secure aggregation: {e}") from e
        if bound != identity.key.public_key().public_bytes_raw():
            raise ValueError(f"{cert}: binds another signing key than {key} derives")
        return identity

    def directory(self, advertisements: Sequence[KeyAdvertisement]) -> CertifiedDirectory:
        return CertifiedDirectory(advertisements, self.authority, self.client_id)
