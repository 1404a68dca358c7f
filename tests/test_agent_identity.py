"""An agent's secure-aggregation signing identity, bound into its client certificate by the
federation CA: what a peer accepts and what it refuses (no processes: the checks alone)."""

from __future__ import annotations

import pytest
from cryptography import x509

from fedpipe.agents import identity, provisioning
from fedpipe.secagg import KeyAdvertisement, SubstitutedKey


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return provisioning.provision(tmp_path_factory.mktemp("tls"), 3)


def _identity(tls, c: int) -> identity.AgentIdentity:
    name = provisioning.client_cn(c)
    return identity.AgentIdentity.load(c, tls.cert(name), tls.key(name), tls.ca_cert)


def _ad(agent: identity.AgentIdentity, certificate: bytes | None = None) -> KeyAdvertisement:
    certificate = agent.certificate_pem if certificate is None else certificate
    return KeyAdvertisement(agent.client_id, bytes(32), bytes(32), b"sig", certificate)


def test_the_certificate_binds_the_key_its_private_key_derives(tls):
    agents = [_identity(tls, c) for c in range(3)]
    directory = agents[0].directory([_ad(a) for a in agents])
    for a in agents:
        assert directory[a.client_id] == a.key.public_key().public_bytes_raw()
    assert len({directory[c] for c in range(3)}) == 3  # one identity per client
    # The certificate travels in the advertisement's record, so a relayed transcript keeps it.
    assert (
        KeyAdvertisement.from_dict(_ad(agents[1]).to_dict()).certificate
        == agents[1].certificate_pem
    )


def test_a_key_the_ca_did_not_certify_for_that_client_is_refused(
    tls, tmp_path, expired_certificate
):
    agents = [_identity(tls, c) for c in range(3)]
    # Another client's genuine certificate for client 1's advertisement.
    with pytest.raises(SubstitutedKey, match="names client 2, not client 1"):
        agents[0].directory([_ad(agents[1], agents[2].certificate_pem)])[1]
    # A certificate of another CA (as a server able to run its own provisioning makes).
    other = provisioning.provision(tmp_path / "other", 2)
    foreign = other.cert(provisioning.client_cn(1)).read_bytes()
    with pytest.raises(SubstitutedKey, match="not issued by the federation CA"):
        agents[0].directory([_ad(agents[1], foreign)])[1]
    # No certificate at all.
    with pytest.raises(SubstitutedKey, match="no certificate"):
        agents[0].directory([_ad(agents[1], b"")])[1]
    # A certificate of the federation CA that binds no signing key (e.g. the orchestrator's).
    with pytest.raises(SubstitutedKey, match="names client None"):
        agents[0].directory([_ad(agents[1], tls.cert("orchestrator").read_bytes())])[1]
    # An expired one.
    expired = expired_certificate(tls, 1, signing_identity=True)[0].read_bytes()
    with pytest.raises(SubstitutedKey, match="expired"):
        agents[0].directory([_ad(agents[1], expired)])[1]
    # A client absent from the advertisements has no key at all.
    assert agents[0].directory([]).get(1) is None


def test_an_agent_refuses_to_start_signing_with_a_certificate_that_binds_another_key(tls, tmp_path):
    with pytest.raises(ValueError, match="binds another signing key"):
        identity.AgentIdentity.load(0, tls.cert("client-0"), tls.key("client-1"), tls.ca_cert)
    cert = x509.load_pem_x509_certificate(tls.cert("client-0").read_bytes())
    extension = cert.extensions.get_extension_for_oid(identity.SIGNING_KEY_OID)
    assert not extension.critical  # TLS stacks that do not know it still accept the certificate
