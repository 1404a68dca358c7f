"""Update compression: what a client sends instead of its float32 delta.

Three compressors, each a client-side step with ``encode(delta, state) -> (payload, state)``
and ``decode(payload) -> delta``; the payload is the exact byte string that goes on the wire,
so ``len(payload)`` is the bytes a client sends:

- ``StochasticQuantizer(bits=8|4)``: per block of coordinates, the block's min and max as two
  float32, then each coordinate stochastically rounded to one of 2^bits evenly spaced levels
  between them (unbiased: E[decode(encode(x))] = x; Alistarh et al. 2017 "QSGD", Suresh et
  al. 2017). 4-bit codes are packed two per byte.
- ``TopK(fraction)``: the largest-magnitude coordinates of delta + residual as uint32
  indices and float32 values; the rest stays in the client's residual and is added to the
  next round's delta (error feedback: Seide et al. 2014, Stich et al. 2018, Karimireddy et
  al. 2019), so nothing the client learned is dropped, only delayed.
- ``Identity``: the raw float32 vector with the same header, the baseline.

Under secure aggregation the server only sees a sum of masked words, so what composes is
quantization *in the masking ring*: ``stochastic_fixed_point`` rounds the clipped, weighted
update stochastically to FixedPoint's grid (unbiased, unlike ``np.rint``), and
``pack_words`` writes each masked word in ``FixedPoint.bits`` bits instead of a whole
machine word; masks are uniform in Z_{2^bits}, so nothing is lost by dropping the high
bits of each word. Top-k does not compose: a mask makes every coordinate non-zero, so the
sparsity (and the indices) would reveal or be destroyed. Under DP, compression after
clipping and noising is post-processing and costs no privacy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Protocol

import numpy as np

from fedpipe.aggregation.layer import ClientContext, Layer
from fedpipe.secagg.quantization import FixedPoint

# Header of every payload: magic, kind, bits, block size, dimension.
_HEADER = struct.Struct("<2sBBII")
_MAGIC = b"FC"
_KIND_IDENTITY, _KIND_QUANTIZED, _KIND_TOPK = 0, 1, 2

KINDS = ("none", "q8", "q4", "topk")


def secure_rng() -> np.random.Generator:
    """A generator seeded from the OS's cryptographic source: rounding draws that an
    observer could otherwise predict and subtract."""
    return np.random.default_rng(int.from_bytes(os.urandom(16), "little"))


class Compressor(Protocol):
    name: str

    def encode(
        self, delta: np.ndarray, state: np.ndarray | None
    ) -> tuple[bytes, np.ndarray | None]: ...

    def decode(self, payload: bytes) -> np.ndarray: ...


def _header(kind: int, bits: int, block: int, size: int) -> bytes:
    return _HEADER.pack(_MAGIC, kind, bits, block, size)


def _read_header(payload: bytes) -> tuple[int, int, int, int]:
    magic, kind, bits, block, size = _HEADER.unpack_from(payload)
    if magic != _MAGIC:
        raise ValueError(f"not a compressed update (magic {magic!r})")
    return kind, bits, block, size


@dataclasses.dataclass(frozen=True)
class Identity:
    """No compression: the float32 delta as it is sent today."""

    name: str = "none"

    def encode(self, delta: np.ndarray, state: np.ndarray | None) -> tuple[bytes, None]:
        vec = np.ascontiguousarray(delta, dtype="<f4")
        return _header(_KIND_IDENTITY, 32, 0, vec.size) + vec.tobytes(), None

    def decode(self, payload: bytes) -> np.ndarray:
        kind, _, _, size = _read_header(payload)
        if kind != _KIND_IDENTITY:
            raise ValueError(f"payload kind {kind} is not an identity payload")
        return np.frombuffer(payload, "<f4", size, _HEADER.size).astype(np.float32)


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned codes < 2^bits, each written in exactly `bits` bits (little-endian order)."""
    codes = np.asarray(codes, dtype=np.uint64)
    if codes.size and int(codes.max()) >= 2**bits:
        raise ValueError(f"a code does not fit in {bits} bits")
    shifts = np.arange(bits, dtype=np.uint64)
    bit_matrix = ((codes[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """The inverse of pack_bits: `count` codes of `bits` bits each, as uint64."""
    flat = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little", count=count * bits)
    weights = np.uint64(1) << np.arange(bits, dtype=np.uint64)
    return (flat.reshape(count, bits).astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


@dataclasses.dataclass(frozen=True)
class StochasticQuantizer:
    """Unbiased stochastic rounding to 2^bits levels per block of `block` coordinates."""

    bits: int = 8
    block: int = 512
    rng: np.random.Generator | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, not {self.bits}")
        if self.block < 1:
            raise ValueError(f"block must be >= 1, not {self.block}")

    @property
    def name(self) -> str:
        return f"q{self.bits}"

    def encode(self, delta: np.ndarray, state: np.ndarray | None) -> tuple[bytes, None]:
        rng = self.rng if self.rng is not None else secure_rng()
        x = np.asarray(delta, dtype=np.float64).reshape(-1)
        size = x.size
        blocks = -(-size // self.block)
        padded = np.zeros(blocks * self.block)
        padded[:size] = x
        padded[size:] = x[-1] if size else 0.0  # padding inside the last block's range
        grid = padded.reshape(blocks, self.block)
        # float32 on the wire, so the decoder's range is exactly the encoder's.
        lo = grid.min(axis=1).astype("<f4")
        hi = grid.max(axis=1).astype("<f4")
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
        levels = 2**self.bits - 1
        span = np.where(hi64 > lo64, hi64 - lo64, 1.0)
        scaled = np.clip((grid - lo64[:, None]) / span[:, None] * levels, 0, levels)
        floor = np.floor(scaled)
        codes = floor + (rng.random(scaled.shape) < (scaled - floor))
        codes = np.minimum(codes, levels).astype(np.uint8).reshape(-1)[:size]
        if self.bits == 4:
            if size % 2:
                codes = np.append(codes, np.uint8(0))
            body = (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8).tobytes()
        else:
            body = codes.tobytes()
        header = _header(_KIND_QUANTIZED, self.bits, self.block, size)
        return header + lo.tobytes() + hi.tobytes() + body, None

    def decode(self, payload: bytes) -> np.ndarray:
        kind, bits, block, size = _read_header(payload)
        if kind != _KIND_QUANTIZED:
            raise ValueError(f"payload kind {kind} is not a quantized payload")
        blocks = -(-size // block)
        offset = _HEADER.size
        lo = np.frombuffer(payload, "<f4", blocks, offset).astype(np.float64)
        hi = np.frombuffer(payload, "<f4", blocks, offset + 4 * blocks).astype(np.float64)
        body = np.frombuffer(payload, np.uint8, offset=offset + 8 * blocks)
        if bits == 4:
            codes = np.empty(body.size * 2, np.uint8)
            codes[0::2], codes[1::2] = body & 0x0F, body >> 4
            codes = codes[:size]
        else:
            codes = body[:size]
        levels = 2**bits - 1
        which = np.arange(size) // block
        step = (hi - lo)[which] / levels
        return (lo[which] + codes.astype(np.float64) * step).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TopK:
    """The k = ceil(fraction * d) largest-magnitude coordinates of delta + residual; the
    rest is the new residual (the client's state), sent in later rounds."""

    fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], not {self.fraction}")

    @property
    def name(self) -> str:
        return f"topk{self.fraction:g}"

    def k(self, size: int) -> int:
        return max(1, int(np.ceil(self.fraction * size)))

    def encode(self, delta: np.ndarray, state: np.ndarray | None) -> tuple[bytes, np.ndarray]:
        x = np.asarray(delta, dtype=np.float32).reshape(-1)
        corrected = x + state if state is not None else x.copy()
        k = self.k(x.size)
        indices = np.sort(np.argpartition(np.abs(corrected), x.size - k)[x.size - k :])
        values = corrected[indices].astype("<f4")
        residual = corrected.copy()
        residual[indices] -= values  # exactly 0 there: the float32 values are what was sent
        header = _header(_KIND_TOPK, 32, k, x.size)
        return header + indices.astype("<u4").tobytes() + values.tobytes(), residual

    def decode(self, payload: bytes) -> np.ndarray:
        kind, _, k, size = _read_header(payload)
        if kind != _KIND_TOPK:
            raise ValueError(f"payload kind {kind} is not a top-k payload")
        indices = np.frombuffer(payload, "<u4", k, _HEADER.size)
        values = np.frombuffer(payload, "<f4", k, _HEADER.size + 4 * k)
        out = np.zeros(size, np.float32)
        out[indices] = values
        return out


def make(kind: str, topk_fraction: float = 0.1) -> Compressor:
    """The compressor a config names: none, q8, q4 or topk."""
    if kind == "none":
        return Identity()
    if kind == "q8":
        return StochasticQuantizer(bits=8)
    if kind == "q4":
        return StochasticQuantizer(bits=4)
    if kind == "topk":
        return TopK(topk_fraction)
    raise ValueError(f"unknown compression {kind!r}: one of {', '.join(KINDS)}")


def bytes_on_wire(payload: bytes) -> int:
    """What the client sends: the length of the serialized payload, header included."""
    return len(payload)


# --- Under secure aggregation: quantization in the masking ring --------------------------


def stochastic_fixed_point(
    encoding: FixedPoint, delta: np.ndarray, weight: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """FixedPoint.encode with unbiased stochastic rounding instead of round-to-nearest, so
    a coarse grid (few fractional bits, hence few bits per word) adds no bias to the sum."""
    rng = rng if rng is not None else secure_rng()

    def stochastic(scaled: np.ndarray) -> np.ndarray:
        floor = np.floor(scaled)
        return floor + (rng.random(scaled.shape) < scaled - floor)

    return encoding.encode(delta, weight, rounding=stochastic)


def pack_words(words: np.ndarray, encoding: FixedPoint) -> bytes:
    """Masked words reduced mod 2^bits and packed in `encoding.bits` bits each: the sum
    never needs more bits, and masks uniform mod 2^word stay uniform mod 2^bits."""
    mask = (1 << encoding.bits) - 1
    return pack_bits(words.astype(np.uint64) & np.uint64(mask), encoding.bits)


def unpack_words(data: bytes, encoding: FixedPoint, count: int) -> np.ndarray:
    """Packed words back as FixedPoint's machine words (the high bits zero)."""
    return unpack_bits(data, encoding.bits, count).astype(encoding.word)


def sum_packed(payloads: list[bytes], encoding: FixedPoint, count: int) -> np.ndarray:
    """The server's sum of packed masked vectors, mod 2^bits, sign-extended into
    FixedPoint's word so that ``encoding.decode_mean`` reads it as it reads a full sum."""
    modulus = np.uint64(1) << np.uint64(encoding.bits)
    total = np.zeros(count, np.uint64)
    for payload in payloads:
        total = (total + unpack_bits(payload, encoding.bits, count)) % modulus
    signed = total.astype(np.int64)
    signed[signed >= 2 ** (encoding.bits - 1)] -= 2**encoding.bits
    return signed.astype(encoding.word)


# --- The simulation's hook: one client's update through encode and decode ----------------


def through_the_wire(
    kind: str,
    topk_fraction: float,
    delta: np.ndarray,
    state_dir: Path,
    client_id: int,
    round_number: int,
) -> np.ndarray:
    """What the server decodes from a client's compressed delta. The client's state (the
    top-k residual) is kept in state_dir between rounds, as a device would keep it, and the
    payload's bytes are appended to state_dir/bytes.jsonl (round, client, kind, bytes)."""
    compressor = make(kind, topk_fraction)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / f"residual_{client_id}.npy"
    state = np.load(state_path) if state_path.exists() else None
    payload, new_state = compressor.encode(delta, state)
    if new_state is not None:
        np.save(state_path, new_state)
    record = {"round": round_number, "client": client_id, "kind": kind}
    record |= {"bytes": bytes_on_wire(payload), "float32_bytes": 4 * int(delta.size)}
    with (state_dir / "bytes.jsonl").open("a") as log:
        log.write(json.dumps(record) + "\n")
    return compressor.decode(payload).astype(delta.dtype)


class Compression(Layer):
    """The client's compressor as a layer of the aggregation chain: its client part sends
    the delta through the compressor (top-k's residual kept in the client's own folder) and
    what comes out is what the server decodes; the payload's bytes go to bytes.jsonl there."""

    name = "compression"
    streamable = True

    def __init__(self, kind: str, topk_fraction: float) -> None:
        self.kind, self.topk_fraction = kind, topk_fraction

    def client(self, delta: np.ndarray, ctx: ClientContext) -> np.ndarray:
        if ctx.state_dir is None:
            raise ValueError(f"client {ctx.client_id}: compression needs the client's folder")
        return through_the_wire(
            self.kind, self.topk_fraction, delta, ctx.state_dir, ctx.client_id, ctx.round_number
        )
