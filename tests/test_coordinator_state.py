"""A restarted coordinator still refuses the messages it accepted before: the sequence
numbers it persisted (an append-only log, compacted now and then, whose last line a crash
may have torn) are its replay floors. A coordinator served in this process on 127.0.0.1."""

from __future__ import annotations

import time

import grpc
import pytest

from fedpipe.agents import coordinator as service
from fedpipe.agents import protocol_pb2 as pb
from fedpipe.agents import protocol_pb2_grpc as pb_grpc
from fedpipe.agents import provisioning, transport


@pytest.fixture
def tls(tmp_path):
    return provisioning.provision(tmp_path / "tls", 3)


def _heartbeat(stub, envelope: pb.Envelope):
    return stub.Heartbeat(pb.HeartbeatRequest(envelope=envelope), timeout=10)


def _serving(tls, state):
    server, coordinator, port = service.serve(
        0, tls.cert("coordinator"), tls.key("coordinator"), tls.ca_cert, state_dir=state
    )
    name = provisioning.client_cn(2)
    channel = transport.secure_channel(
        f"127.0.0.1:{port}", tls.cert(name), tls.key(name), tls.ca_cert
    )
    return server, coordinator, channel, pb_grpc.CoordinatorStub(channel)


def _stop(server, coordinator, channel) -> None:
    channel.close()
    server.stop(None).wait()
    coordinator.close()


def test_a_restarted_coordinator_refuses_messages_accepted_before(tls, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "LOG_LINES_KEPT", 3)  # compacted while the messages come
    state = tmp_path / "state"
    first = time.time_ns() // 1000
    accepted = [transport.envelope(2, first + i) for i in range(7)]
    server, coordinator, channel, stub = _serving(tls, state)
    try:
        assert all(_heartbeat(stub, e).ok for e in accepted)
    finally:
        _stop(server, coordinator, channel)
    assert len((state / "sequences.log").read_text().splitlines()) < len(accepted)
    with open(state / "sequences.log", "a") as log:
        log.write("2 17")  # a line torn by a crash mid-append

    server, coordinator, channel, stub = _serving(tls, state)
    try:
        for envelope in accepted:
            with pytest.raises(grpc.RpcError) as refused:
                _heartbeat(stub, envelope)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "replayed" in refused.value.details()
        assert _heartbeat(stub, transport.envelope(2, first + len(accepted))).ok
    finally:
        _stop(server, coordinator, channel)
