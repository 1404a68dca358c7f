"""Streaming FedAvg: the list path's mean, rejections and statistics, in O(model) memory."""

import dataclasses
import tracemalloc

import numpy as np

from fedpipe import config
from fedpipe.aggregation import streaming, vector_math
from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import RoundContext
from fedpipe.aggregation.outcome import ClientStats
from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate, load_shard, save_shard
from fedpipe.stages.aggregate import _collect


def spec(size: int) -> wire.WeightsSpec:
    return wire.WeightsSpec(names=("w",), shapes=((size,),))


def write_shards(tmp_path, clients, size, per_shard=5, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for s, start in enumerate(range(0, len(clients), per_shard)):
        updates = [
            ClientUpdate.of(
                c,
                rng.normal(0, 0.1, size).astype(np.float32),
                num_examples=int(rng.integers(1, 500)),
                train_loss=float(c),
                duration_s=0.5,
            )
            for c in clients[start : start + per_shard]
        ]
        paths.append(tmp_path / f"updates_{s}.npz")
        save_shard(paths[-1], 1, s, updates)
    return paths


CHAIN = build_chain(config.RunConfig())


def round_context(cohort, weights_spec):
    return RoundContext(1, cohort, {}, {}, weights_spec, secure=False)


def streamed_sum(cohort, paths, weights_spec):
    assert CHAIN.streams
    return streaming.weighted_sum(CHAIN, paths, round_context(cohort, weights_spec))


def list_path(cohort, paths, weights_spec):
    """What stages.aggregate does without streaming: collect, screen, combine."""
    received, missing = _collect(cohort, paths)
    rnd = round_context(cohort, weights_spec)
    screened = CHAIN.screen(received, rnd)
    accepted, rejected = screened.kept, screened.rejected
    delta = CHAIN.combine(accepted, rnd).delta
    stats = [
        ClientStats(
            u.client_id,
            u.num_examples,
            u.train_loss,
            u.duration_s,
            vector_math.l2_norm(u.vector),
            vector_math.cosine(u.vector, delta),
        )
        for u in accepted
    ]
    return delta, stats, sorted(rejected + missing, key=lambda r: r.client_id)


def test_only_a_chain_of_per_update_parts_streams():
    assert build_chain(config.RunConfig()).streams
    for changes in (
        {"aggregation.rule": "norm_bounding"},
        {"aggregation.rule": "median"},
        {"aggregation.screening.policy": "flag"},
        {"aggregation.dp.clip_norm": 1.0},
        {"aggregation.secure.mode": "secagg+"},
        {"selection.client_weighting": "adaptive"},
    ):
        expected = changes == {"aggregation.rule": "norm_bounding"}
        assert build_chain(config.from_mapping(changes)).streams is expected, changes


def test_streaming_matches_the_list_path_bit_for_bit_with_every_kind_of_rejection(tmp_path):
    size, cohort = 1000, list(range(20))
    paths = write_shards(tmp_path, cohort[:18], size)  # clients 18 and 19 send nothing
    # Shard 1: one corrupted update, a stranger and a duplicate of client 0.
    updates = load_shard(paths[1])
    bad = dataclasses.replace(updates[0], vector=updates[0].vector + np.float32(1))
    stranger = ClientUpdate.of(
        99, np.ones(size, np.float32), num_examples=3, train_loss=0, duration_s=0
    )
    save_shard(paths[1], 1, 1, [bad, *updates[1:], stranger, load_shard(paths[0])[0]])
    paths.append(tmp_path / "updates_missing.npz")  # an unreadable shard
    streamed = streamed_sum(cohort, paths, spec(size))
    delta, stats, rejected = list_path(cohort, paths, spec(size))
    np.testing.assert_array_equal(streamed.aggregate.delta, delta)
    assert streamed.accepted == stats
    assert sorted(streamed.rejected, key=lambda r: r.client_id) == rejected
    assert {r.client_id for r in rejected} == {0, 5, 18, 19, 99}


def test_memory_stays_a_few_models_whatever_the_cohort(tmp_path):
    size, cohort = 50_000, list(range(200))
    paths = write_shards(tmp_path, cohort, size)
    model_bytes = 4 * size
    tracemalloc.start()
    streamed = streamed_sum(cohort, paths, spec(size))
    _, streamed_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    list_path(cohort, paths, spec(size))
    _, list_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(streamed.accepted) == 200
    # float64 sum, mean, one shard of 5 as read, the updates held for the agreement pass
    # until the cohort outgrows them, and the temporaries of one update's add
    assert streamed_peak < (streaming.HELD_MODELS + 25) * model_bytes
    assert list_peak > 150 * model_bytes  # every update held at once


def test_a_small_cohort_read_once_gives_the_same_result(tmp_path):
    size, cohort = 1000, list(range(streaming.HELD_MODELS))
    paths = write_shards(tmp_path, cohort, size)
    streamed = streamed_sum(cohort, paths, spec(size))
    delta, stats, rejected = list_path(cohort, paths, spec(size))
    np.testing.assert_array_equal(streamed.aggregate.delta, delta)
    assert streamed.accepted == stats and streamed.rejected == rejected == []
