"""Provisioning: one federation CA, the coordinator's server certificate, the
orchestrator's certificate (the pipeline's tasks) and one certificate per client.

A client certificate names its client in the subject CN (`client-3`) and in a SAN URI
(`fedpipe://client/3`), and binds the agent's secure-aggregation signing key
(fedpipe.agents.identity); the coordinator maps a connection to a client id from the
certificate the TLS handshake verified, never from what a message claims.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_CN_PREFIX = "client-"
COORDINATOR_CN = "fedpipe-coordinator"
ORCHESTRATOR_CN = "fedpipe-orchestrator"
CA_CN = "fedpipe federation CA"


def client_cn(client_id: int) -> str:
    return f"{CLIENT_CN_PREFIX}{client_id}"


def client_id_of(common_name: str) -> int | None:
    """The client id a certificate's CN names, or None when it names no client."""
    if not common_name.startswith(CLIENT_CN_PREFIX):
        return None
    digits = common_name[len(CLIENT_CN_PREFIX) :]
    return int(digits) if digits.isdigit() else None


@dataclasses.dataclass(frozen=True)
class Authority:
    """A CA's certificate and key, to issue certificates with."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, cert_path: str | Path, key_path: str | Path) -> Authority:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(cert, key)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedpipe federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_authority(valid_days: int = 365, common_name: str = CA_CN) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue(
    authority: Authority,
    common_name: str,
    *,
    server_hosts: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    signing_identity: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate: a server one when server_hosts are given (DNS names or IPs in
    its SAN), else a client one, with signing_identity binding the key the agent signs
    its secure-aggregation messages with. not_before/not_after default to now .. one
    year."""
    from fedpipe.agents import identity

    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - datetime.timedelta(minutes=5)
    end = not_after or _now() + datetime.timedelta(days=365)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    for host in server_hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if signing_identity:
        builder = builder.add_extension(identity.signing_extension(key), critical=False)
    return builder.sign(authority.key, hashes.SHA256()), key


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """A private key in PEM, readable by its owner only (created 0600, never wider)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where provisioning puts each file (see docs/deployment.md for who gets which)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"


def provision(
    out: str | Path, clients: int, coordinator_hosts: tuple[str, ...] = ("127.0.0.1",)
) -> Layout:
    """Write a new federation: ca.pem/ca.key, coordinator.pem/.key (server, SAN for its
    hosts), orchestrator.pem/.key (the pipeline's tasks) and client-<i>.pem/.key."""
    layout = Layout(Path(out))
    layout.root.mkdir(parents=True, exist_ok=True)
    authority = create_authority()
    write_certificate(layout.ca_cert, authority.certificate)
    write_key(layout.ca_key, authority.key)
    hosts = tuple(dict.fromkeys((*coordinator_hosts, "localhost")))
    leaves = [("coordinator", COORDINATOR_CN, hosts, ()), ("orchestrator", ORCHESTRATOR_CN, (), ())]
    leaves += [(client_cn(i), client_cn(i), (), (f"fedpipe://client/{i}",)) for i in range(clients)]
    for name, cn, server_hosts, uris in leaves:
        cert, key = issue(
            authority, cn, server_hosts=server_hosts, uris=uris, signing_identity=bool(uris)
        )
        write_certificate(layout.cert(name), cert)
        write_key(layout.key(name), key)
    return layout
