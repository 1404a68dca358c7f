"""The coordinator and agents as real processes on 127.0.0.1: mutual-TLS authentication,
impersonation, replay and tampering refused, liveness from heartbeats, restart."""

from __future__ import annotations

import json
import stat
import threading
import time
import uuid

import grpc
import numpy as np
import pytest
from cryptography import x509

from fedpipe.agents import data_folder, provisioning, transport
from fedpipe.agents import protocol_pb2 as pb
from fedpipe.agents import protocol_pb2_grpc as pb_grpc
from fedpipe.agents.local import LocalFederation, wait_until


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """A coordinator and the agents of clients 0 and 1 (clients 2, 3 are left for probes)."""
    root = tmp_path_factory.mktemp("federation")
    fed = LocalFederation(root, clients=4, heartbeat_interval_s=0.3, heartbeat_timeout_s=3.0)
    try:
        fed.start_coordinator()
        rng = np.random.default_rng(0)
        for c in (0, 1):
            folder = data_folder.write(root / f"data-{c}", rng.random((20, 8)), np.arange(20) % 2)
            fed.start_agent(c, folder)
        fed.wait_online([0, 1])
        yield fed
    finally:
        fed.stop()


def _stub(fed: LocalFederation, cert, key, ca=None):
    channel = transport.secure_channel(fed.address, cert, key, ca or fed.tls.ca_cert)
    return channel, pb_grpc.CoordinatorStub(channel)


def _client_stub(fed: LocalFederation, client_id: int):
    name = provisioning.client_cn(client_id)
    return _stub(fed, fed.tls.cert(name), fed.tls.key(name))


def _status(fed: LocalFederation) -> dict[int, pb.AgentStatus]:
    with fed.remote() as remote:
        return {a.client_id: a for a in remote.status()}


_sequence = iter(range(time.time_ns() // 1000, 2**62))


def _heartbeat(stub, client_id: int, sequence: int | None = None, sent_at: float | None = None):
    envelope = transport.envelope(client_id, sequence or next(_sequence))
    if sent_at is not None:
        envelope.sent_at = sent_at
    return stub.Heartbeat(pb.HeartbeatRequest(envelope=envelope), timeout=10)


def test_provisioned_keys_are_private_and_certificates_name_their_client(federation):
    tls = federation.tls
    for name in ("ca", "coordinator", "orchestrator", "client-0", "client-3"):
        mode = stat.S_IMODE((tls.root / f"{name}.key").stat().st_mode)
        assert mode == 0o600, name
    cert = x509.load_pem_x509_certificate(tls.cert("client-3").read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "client-3"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["fedpipe://client/3"]


def test_agents_register_and_heartbeat(federation):
    first = _status(federation)
    assert first[0].online and first[1].online
    assert first[0].registered_at > 0
    time.sleep(1.0)
    later = _status(federation)
    assert later[0].last_heartbeat > first[0].last_heartbeat
    assert later[1].last_heartbeat > first[1].last_heartbeat
    log = federation.coordinator_log.read_text()
    assert "client 0 registered" in log and "client 1 registered" in log


def test_a_task_and_its_payload_stream_through_an_agent(federation):
    payload = np.random.default_rng(1).bytes(700_000)  # three chunks each way
    with federation.remote(task_timeout_s=60) as remote:
        reply = remote.dispatch(0, "ping", {}, {"echo": payload})
    assert reply.ok, reply.error
    assert reply.meta["client_id"] == 0
    assert reply.files["echo"] == payload


def _handshake_failures(fed: LocalFederation) -> int:
    return fed.coordinator_log.read_text().count("Handshake failed")


def _refused_at_handshake(fed: LocalFederation, channel, stub) -> None:
    before = _handshake_failures(fed)
    with pytest.raises(grpc.RpcError) as refused:
        _heartbeat(stub, 3)
    channel.close()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    wait_until(lambda: _handshake_failures(fed) > before, 10, "the refusal in the log")
    assert 3 not in _status(fed)  # nothing of it reached the coordinator's state


def test_a_certificate_from_another_ca_is_refused_and_logged(federation, tmp_path):
    other = provisioning.provision(tmp_path / "other", 4)
    channel, stub = _stub(federation, other.cert("client-3"), other.key("client-3"))
    _refused_at_handshake(federation, channel, stub)


def test_a_caller_without_a_certificate_is_refused_and_logged(federation):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=federation.tls.ca_cert.read_bytes()
    )
    channel = grpc.secure_channel(federation.address, credentials)
    _refused_at_handshake(federation, channel, pb_grpc.CoordinatorStub(channel))


def test_an_expired_certificate_is_refused_and_logged(federation, expired_certificate):
    channel, stub = _stub(federation, *expired_certificate(federation.tls, 3))
    _refused_at_handshake(federation, channel, stub)


def test_a_client_claiming_another_clients_id_is_refused_and_logged(federation):
    channel, stub = _client_stub(federation, 2)
    _heartbeat(stub, 2)  # its own id: accepted
    with pytest.raises(grpc.RpcError) as refused:
        _heartbeat(stub, 1)  # client 2's certificate, claiming client 1
    channel.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "impersonation: certificate of client 2" in federation.coordinator_log.read_text()
    assert _status(federation)[2].refused_messages >= 1


def test_a_client_certificate_cannot_act_as_the_orchestrator(federation):
    channel, stub = _client_stub(federation, 2)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Status(pb.StatusRequest(), timeout=10)
    channel.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_replayed_and_stale_messages_are_rejected(federation):
    channel, stub = _client_stub(federation, 2)
    sequence = next(_sequence)
    assert _heartbeat(stub, 2, sequence).ok
    with pytest.raises(grpc.RpcError) as replayed:
        _heartbeat(stub, 2, sequence)  # the same message again
    assert replayed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "replayed" in replayed.value.details()
    with pytest.raises(grpc.RpcError) as stale:
        _heartbeat(stub, 2, sent_at=time.time() - 3600)
    assert "stale" in stale.value.details()
    channel.close()
    log = federation.coordinator_log.read_text()
    assert "replayed message from client 2" in log and "stale message from client 2" in log


def test_a_tampered_answer_is_rejected_and_never_delivered(federation):
    """Client 3 (no agent process: this test speaks for it) fetches a task and answers
    with a payload that does not match its header; the dispatcher gets no answer."""
    channel, stub = _client_stub(federation, 3)
    stub.Register(pb.RegisterRequest(envelope=transport.envelope(3, next(_sequence))), timeout=10)
    replies = []
    with federation.remote(task_timeout_s=8) as remote:
        dispatcher = threading.Thread(
            target=lambda: replies.append(remote.dispatch(3, "ping", {}, {"echo": b"x" * 10}))
        )
        dispatcher.start()
        poll = pb.TaskPoll(envelope=transport.envelope(3, next(_sequence)), wait_s=5)
        task, _ = transport.collect(stub.FetchTask(poll, timeout=20), "task")
        assert task is not None and task.kind == "ping"
        answer = transport.pack({"echo": b"honest"})
        result = pb.Result(
            envelope=transport.envelope(3, next(_sequence)),
            task_id=task.task_id,
            ok=True,
            meta_json=json.dumps({"client_id": 3}).encode(),
            payload_size=len(answer),
            payload_sha256=transport.digest(answer),
        )
        tampered = answer[:-1] + bytes([answer[-1] ^ 1])
        with pytest.raises(grpc.RpcError) as rejected:
            stub.SubmitResult(transport.result_stream(result, tampered), timeout=10)
        assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        dispatcher.join(timeout=60)
    channel.close()
    assert len(replies) == 1 and not replies[0].ok
    assert "after receiving the task" in replies[0].error  # silent, then offline
    assert "tampered or truncated" in federation.coordinator_log.read_text()


def test_an_answer_to_another_clients_task_is_refused(federation):
    channel, stub = _client_stub(federation, 2)
    answer = b""
    result = pb.Result(
        envelope=transport.envelope(2, next(_sequence)),
        task_id=uuid.uuid4().hex,
        ok=True,
        payload_size=0,
        payload_sha256=transport.digest(answer),
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitResult(transport.result_stream(result, answer), timeout=10)
    channel.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_killed_agent_goes_offline_and_a_restarted_one_rejoins(federation):
    folder = federation.root / "data-1"
    killed_at = time.monotonic()
    federation.kill_agent(1)  # SIGKILL
    wait_until(lambda: not _status(federation)[1].online, 30, "client 1 to go offline")
    # Its last sign of life (a heartbeat, or its open poll's once-a-second mark) came at
    # most about a second before the kill: offline by the timeout, not at once.
    assert time.monotonic() - killed_at >= federation.heartbeat_timeout_s - 1.5
    assert _status(federation)[0].online
    federation.start_agent(1, folder)  # same state dir: its sequence numbers go on
    federation.wait_online([1], timeout_s=60)
    with federation.remote(task_timeout_s=60) as remote:
        reply = remote.dispatch(1, "ping", {}, {"echo": b"back"})
    assert reply.ok and reply.files["echo"] == b"back"
    state = federation.state_dir(1)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_payload_is_its_named_files_and_anything_else_is_refused():
    files = {"plan": bytes(range(256)) * 40, "empty": b"", "transcript": b"[]"}
    payload = transport.pack(files)
    assert transport.unpack(payload) == files
    index = json.dumps([["a", 1], ["a", 1]]).encode()
    repeated = len(index).to_bytes(4, "big") + index + b"xy"
    for malformed in (payload[:-1], payload + b"x", b"\x00\x00", b"\x00\x00\x00\x02{}", repeated):
        with pytest.raises(transport.PayloadError):
            transport.unpack(malformed)


def test_a_coordinator_dies_with_the_thread_that_started_it(tmp_path):
    """LocalFederation's processes set their parent-death signal themselves once they run
    (a preexec_fn would make subprocess fork, running gRPC's fork handlers): when the
    thread that started a coordinator ends, the coordinator is killed."""
    fed = LocalFederation(tmp_path / "federation", 1)
    starter = threading.Thread(target=fed.start_coordinator)
    starter.start()
    starter.join()  # it returned once the coordinator listened; the thread is gone
    assert fed.coordinator is not None
    assert fed.coordinator.wait(timeout=30) == -9  # SIGKILL
