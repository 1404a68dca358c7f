"""Update compressors: their error, their bytes and their state are as claimed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedpipe import config, preflight
from fedpipe.aggregation import compression
from fedpipe.secagg.quantization import TRAILING_WORDS, FixedPoint


def _delta(size: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.01, size).astype(np.float32)


@pytest.mark.parametrize("bits", [8, 4])
def test_stochastic_quantization_is_unbiased(bits: int) -> None:
    x = _delta(300)
    quantizer = compression.StochasticQuantizer(bits=bits, block=64, rng=np.random.default_rng(1))
    draws = np.stack([quantizer.decode(quantizer.encode(x, None)[0]) for _ in range(4000)])
    # Each decode is x plus zero-mean rounding noise bounded by one step: the mean of n
    # draws is within 5 standard errors of x (step^2 / 4 bounds the variance).
    blocks = x.reshape(-1)[: 300 // 64 * 64].reshape(-1, 64)
    step = float(np.max(blocks.max(axis=1) - blocks.min(axis=1))) / (2**bits - 1)
    step = max(step, float(x[256:].max() - x[256:].min()) / (2**bits - 1))
    bound = 5 * (step / 2) / np.sqrt(len(draws))
    assert np.max(np.abs(draws.mean(axis=0) - x)) < bound
    # ...and a single decode is off by less than one step, never more.
    assert np.max(np.abs(draws[0] - x)) <= step * (1 + 1e-4)


@pytest.mark.parametrize(("bits", "ratio"), [(8, 3.9), (4, 7.5)])
def test_quantized_bytes_are_the_packed_codes(bits: int, ratio: float) -> None:
    x = _delta(10_001)
    quantizer = compression.StochasticQuantizer(bits=bits, block=512)
    payload, state = quantizer.encode(x, None)
    blocks = -(-x.size // 512)
    codes = x.size if bits == 8 else (x.size + 1) // 2
    assert state is None
    assert compression.bytes_on_wire(payload) == 12 + 8 * blocks + codes
    plain, _ = compression.Identity().encode(x, None)
    assert len(plain) == 12 + 4 * x.size
    assert len(plain) / len(payload) > ratio
    assert compression.Identity().decode(plain).tobytes() == x.tobytes()


def test_constant_block_decodes_exactly() -> None:
    x = np.full(100, 0.25, np.float32)
    quantizer = compression.StochasticQuantizer(bits=4, block=32)
    np.testing.assert_array_equal(quantizer.decode(quantizer.encode(x, None)[0]), x)


def test_topk_sends_k_coordinates_as_indices_and_values() -> None:
    x = _delta(1000)
    topk = compression.TopK(0.1)
    payload, residual = topk.encode(x, None)
    sent = topk.decode(payload)
    assert np.count_nonzero(sent) == 100
    assert len(payload) == 12 + 100 * (4 + 4)
    largest = np.sort(np.argsort(np.abs(x))[-100:])
    np.testing.assert_array_equal(np.flatnonzero(sent), largest)
    np.testing.assert_array_equal(sent + residual, x)


def test_error_feedback_keeps_the_residual() -> None:
    topk = compression.TopK(0.05)
    rng = np.random.default_rng(3)
    inputs = [rng.normal(0, 1, 500).astype(np.float32) for _ in range(30)]
    state, sent_total = None, np.zeros(500, np.float64)
    for delta in inputs:
        payload, state = topk.encode(delta, state)
        sent_total += topk.decode(payload)
    np.testing.assert_allclose(sent_total + state, np.sum(inputs, axis=0), atol=1e-4)
    # Without the residual the dropped mass would be lost: most of it is sent by now.
    assert np.linalg.norm(state) < np.linalg.norm(np.sum(inputs, axis=0))


def test_payload_kinds_are_checked() -> None:
    payload, _ = compression.TopK(0.5).encode(_delta(10), None)
    with pytest.raises(ValueError, match="not a quantized"):
        compression.StochasticQuantizer(bits=8).decode(payload)
    with pytest.raises(ValueError, match="not a compressed"):
        compression.Identity().decode(b"xx" + payload[2:])


def test_bit_packing_round_trips() -> None:
    codes = np.random.default_rng(0).integers(0, 2**13, 777)
    data = compression.pack_bits(codes, 13)
    assert len(data) == -(-777 * 13 // 8)
    np.testing.assert_array_equal(compression.unpack_bits(data, 13, 777), codes)


def test_secure_sum_of_packed_stochastic_fixed_point_words() -> None:
    """Quantization composes with SecAgg: stochastically rounded fixed-point words, masked
    with masks that cancel mod 2^word, packed in FixedPoint.bits bits, sum to the
    weighted mean without bias."""
    encoding = FixedPoint(clip=0.05, fractional_bits=8, max_examples=64, cohort_size=4)
    assert encoding.bits == 10  # 10 bits a coordinate on the wire instead of a uint32 word
    rng = np.random.default_rng(5)
    deltas = [rng.normal(0, 0.01, 200) for _ in range(4)]
    weights = [10, 20, 30, 40]
    modulus = 2**32
    words = 200 + TRAILING_WORDS  # the coordinates, the loss (here 0), the weight
    masks = [rng.integers(0, modulus, words, dtype=np.uint64) for _ in range(3)]
    masks.append((-np.sum(masks, axis=0)) % modulus)  # the pairwise masks' cancellation
    means = []
    for _ in range(200):
        payloads = [
            compression.pack_words(
                (compression.stochastic_fixed_point(encoding, d, w, rng).astype(np.uint64) + m)
                % modulus,
                encoding,
            )
            for d, w, m in zip(deltas, weights, masks, strict=True)
        ]
        assert len(payloads[0]) == -(-words * encoding.bits // 8)
        mean, total = encoding.decode_mean(compression.sum_packed(payloads, encoding, words))
        assert total == sum(weights)
        means.append(mean)
    exact = sum(w * d for w, d in zip(weights, deltas, strict=True)) / sum(weights)
    # One grid step of a client's word is M / (scale * total) in the mean; each of the 4
    # clients is off by less than one step, with standard deviation at most half a step.
    step = encoding.max_examples / (encoding.scale * sum(weights))
    assert np.max(np.abs(means[0] - exact)) < 4 * step
    spread = np.sqrt(4) * step / 2 / np.sqrt(len(means))
    assert np.max(np.abs(np.mean(means, axis=0) - exact)) < 5 * spread


def test_make_names_every_kind() -> None:
    assert [compression.make(k, 0.2).name for k in compression.KINDS] == [
        "none",
        "q8",
        "q4",
        "topk0.2",
    ]
    with pytest.raises(ValueError, match="unknown compression"):
        compression.make("zip")


def test_simulation_sends_compressed_updates_and_keeps_residuals(small_config, tmp_path) -> None:
    from fedpipe.simulation.runner import simulate

    cfg = small_config.replace(
        {"aggregation.compression.kind": "topk", "aggregation.compression.topk_fraction": 0.2}
    )
    result = simulate(cfg, tmp_path / "sim", register=False)
    state = tmp_path / "sim" / "clients"
    records = [json.loads(line) for line in (state / "bytes.jsonl").read_text().splitlines()]
    size = result.model.weights.size
    k = int(np.ceil(0.2 * size))
    assert len(records) == cfg.training.rounds * cfg.selection.cohort_size
    assert {r["bytes"] for r in records} == {12 + 8 * k}
    assert {r["float32_bytes"] for r in records} == {4 * size}
    residuals = sorted(p.name for p in state.glob("residual_*.npy"))
    assert residuals == [f"residual_{c}.npy" for c in range(cfg.data.num_clients)]
    assert np.linalg.norm(np.load(state / "residual_0.npy")) > 0  # held back for later rounds
    assert result.accuracy[-1] > 0.5  # still learns from a fifth of the coordinates


def test_topk_is_refused_under_secure_aggregation() -> None:
    secure = config.from_mapping({"aggregation.secure.mode": "secagg"})
    with pytest.raises(config.ConfigError, match="masks make every coordinate non-zero"):
        preflight.check(secure.replace({"aggregation.compression.kind": "topk"}))
    with pytest.raises(config.ConfigError, match="save no bytes"):
        preflight.check(secure.replace({"aggregation.compression.kind": "q4"}))
    assert preflight.check(config.from_mapping({"aggregation.compression.kind": "q4"}))


def test_compression_summary_is_the_mean_and_std_of_the_seeds():
    from fedpipe.experiments import compression as experiment

    cells = [
        experiment.Cell("none", 0, 0.90, 400.0, 400),
        experiment.Cell("none", 1, 0.92, 400.0, 400),
        experiment.Cell("q8", 0, 0.89, 100.0, 400),
        experiment.Cell("q8", 1, 0.89, 100.0, 400),
    ]
    none, q8 = experiment.summary(cells, 0.1)
    assert none["accuracy_mean"] == pytest.approx(0.91)
    assert none["accuracy_std"] == pytest.approx(np.std([0.90, 0.92], ddof=1))
    assert q8["accuracy_std"] == 0.0 and q8["reduction"] == 4.0  # the seeds agree
    assert q8["accuracy_minus_none"] == pytest.approx(-0.02)
