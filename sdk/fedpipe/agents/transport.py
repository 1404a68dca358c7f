"""What the coordinator, the agents and the pipeline's tasks share on the wire: mutual-TLS
credentials, message envelopes and payloads sent as chunk streams."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

from fedpipe.agents import protocol_pb2 as pb

CHUNK_BYTES = 1024 * 1024
# Payloads are chunked below gRPC's default 4 MiB message limit, in few messages (each
# costs each hop a fraction of a millisecond: a model is one chunk); the cap guards a
# receiver against a sender that streams without end.
MAX_PAYLOAD_BYTES = 1 << 30


def read_pem(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def channel_credentials(cert: str | Path, key: str | Path, ca: str | Path):
    """Credentials of a caller that presents its certificate and trusts only the CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca),
        private_key=read_pem(key),
        certificate_chain=read_pem(cert),
    )


def server_credentials(cert: str | Path, key: str | Path, ca: str | Path):
    """The coordinator's credentials: every caller must present a certificate of the CA."""
    return grpc.ssl_server_credentials(
        [(read_pem(key), read_pem(cert))],
        root_certificates=read_pem(ca),
        require_client_auth=True,
    )


def secure_channel(address: str, cert: str | Path, key: str | Path, ca: str | Path):
    # No keepalive pings: agents heartbeat every second, and a gRPC server answers pings
    # more frequent than its policy allows with GOAWAY (too_many_pings).
    options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    return grpc.secure_channel(address, channel_credentials(cert, key, ca), options)


def envelope(client_id: int, sequence: int) -> pb.Envelope:
    return pb.Envelope(client_id=client_id, sequence=sequence, sent_at=time.time())


def digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def chunks(payload: bytes) -> Iterator[bytes]:
    for start in range(0, len(payload), CHUNK_BYTES):
        yield payload[start : start + CHUNK_BYTES]


def task_stream(task: pb.Task, payload: bytes) -> Iterator[pb.TaskChunk]:
    yield pb.TaskChunk(task=task)
    for part in chunks(payload):
        yield pb.TaskChunk(data=part)


def result_stream(result: pb.Result, payload: bytes) -> Iterator[pb.ResultChunk]:
    yield pb.ResultChunk(result=result)
    for part in chunks(payload):
        yield pb.ResultChunk(data=part)


class PayloadError(ValueError):
    """A stream whose header is missing or whose payload does not match its header."""


def collect(stream: Iterable, header_field: str):
    """(header, payload) of a chunk stream whose first chunk is the header; the payload's
    size and SHA-256 are checked against the header's."""
    header, parts, size = None, [], 0
    for chunk in stream:
        if chunk.WhichOneof("part") == header_field:
            if header is not None:
                raise PayloadError("a second header in one stream")
            header = getattr(chunk, header_field)
            continue
        if header is None:
            raise PayloadError("payload data before the header")
        size += len(chunk.data)
        if size > MAX_PAYLOAD_BYTES or size > header.payload_size:
            raise PayloadError(f"payload longer than the {header.payload_size} bytes announced")
        parts.append(chunk.data)
    if header is None:
        return None, b""
    payload = b"".join(parts)
    if len(payload) != header.payload_size or digest(payload) != header.payload_sha256:
        raise PayloadError(
            f"payload of {len(payload)} bytes does not match its header "
            f"({header.payload_size} bytes, announced SHA-256): tampered or truncated"
        )
    return header, payload


_INDEX_SIZE = struct.Struct(">I")


def pack(files: dict[str, bytes]) -> bytes:
    """Named byte strings as one payload, the format of every task and answer: the size
    of a JSON index ([name, size] in order), the index, then the bytes one after the
    other. Nothing to unpickle or inflate, and one copy each way (an npz archive cost
    milliseconds per model-sized file in CRCs and copies)."""
    index = json.dumps([[name, len(data)] for name, data in files.items()]).encode()
    return b"".join([_INDEX_SIZE.pack(len(index)), index, *files.values()])


def unpack(payload: bytes) -> dict[str, bytes]:
    """The files of a payload made by pack; PayloadError if it is not one."""
    if not payload:
        return {}
    try:
        (index_size,) = _INDEX_SIZE.unpack_from(payload)
        start = _INDEX_SIZE.size + index_size
        index = json.loads(payload[_INDEX_SIZE.size : start])
    except (struct.error, ValueError) as e:
        raise PayloadError(f"not a payload of named files ({e})") from e
    entries = index if isinstance(index, list) else [None]
    if not all(_is_entry(e) for e in entries) or len({n for n, _ in entries}) != len(entries):
        raise PayloadError("a payload index that is not a list of distinct [name, size]")
    sizes = dict(entries)
    if start + sum(sizes.values()) != len(payload):
        raise PayloadError("a payload whose index does not add up to its length")
    files = {}
    for name, size in sizes.items():
        files[name] = payload[start : start + size]
        start += size
    return files


def _is_entry(entry: object) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and type(entry[1]) is int
        and entry[1] >= 0
    )
