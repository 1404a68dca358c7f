"""Crafted and corrupted update shards: each becomes a missing shard with its reason, and
aggregate's reading never crashes and never accepts a bad update (a hypothesis fuzz)."""

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import ClientContext, RoundContext
from fedpipe.aggregation.validation import UpdateValidation
from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate, ShardUnreadable, load_shard, save_shard
from fedpipe.secagg import encoding as secagg_encoding
from fedpipe.stages.aggregate import _collect

SPEC = wire.WeightsSpec(names=("w",), shapes=((8,),))
COHORT = [0, 1, 2]


def _good(client: int = 0) -> ClientUpdate:
    return ClientUpdate.of(
        client, np.full(8, 0.1, np.float32), num_examples=5, train_loss=0.3, duration_s=0.1
    )


def _npy(header: dict, data: bytes) -> bytes:
    """A .npy member with any header we like (numpy's writer would refuse some)."""
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def _meta_npy(meta: dict) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array(json.dumps(meta)))
    return buffer.getvalue()


def _records(*updates: ClientUpdate) -> dict:
    fields = ("client_id", "num_examples", "train_loss", "duration_s", "checksum", "encoding")
    return {
        "round": 1,
        "shard": 0,
        "updates": [{f: getattr(u, f) for f in fields} for u in updates],
    }


def _zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_crafted_shards_become_missing_shards_with_their_reason(tmp_path):
    good = tmp_path / "good.npz"
    save_shard(good, 1, 0, [_good(0)])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-40])
    unexpected = tmp_path / "unexpected.npz"
    meta = _records(_good(1))
    meta["updates"][0]["evil"] = 1
    _zip(unexpected, {"__meta__.npy": _meta_npy(meta), "client_1.npy": _npy_of(_good(1))})
    huge = tmp_path / "huge.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**42,)}
    _zip(huge, {"__meta__.npy": _meta_npy(_records(_good(1))), "client_1.npy": _npy(header, b"")})
    pickled = tmp_path / "pickled.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _zip(
        pickled, {"__meta__.npy": _meta_npy(_records(_good(1))), "client_1.npy": buffer.getvalue()}
    )
    expected = {
        truncated: "BadZipFile",
        unexpected: "exactly the fields",
        huge: "header declares shape (4398046511104,)",
        pickled: "no pickles",
    }
    for path, reason in expected.items():
        with pytest.raises(ShardUnreadable, match=reason.replace("(", r"\(").replace(")", r"\)")):
            load_shard(path)
    kept, rejections = _collect(COHORT, [good, *expected])
    assert [u.client_id for u in kept] == [0]
    missing = {r.client_id: r.reason for r in rejections}
    assert set(missing) == {1, 2}
    for reason in ("BadZipFile", "exactly the fields", "header declares shape", "no pickles"):
        assert reason in missing[1]


def _npy_of(update: ClientUpdate) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, update.vector)
    return buffer.getvalue()


def test_a_deflate_bomb_is_not_inflated_beyond_its_declared_size(tmp_path):
    """1 GiB of zeros deflates to about 1 MB; its header declares 8 floats. Reading stops
    one byte past the declared 32 bytes, whatever the member inflates to."""
    bomb = tmp_path / "bomb.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (8,)}
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("__meta__.npy", _meta_npy(_records(_good(1))))
        with z.open("client_1.npy", "w") as member:
            member.write(_npy(header, b""))
            chunk = bytes(2**20)
            for _ in range(1024):
                member.write(chunk)
    assert bomb.stat().st_size < 2 * 2**20
    with pytest.raises(ShardUnreadable, match="more data than its header declares"):
        load_shard(bomb)
    # A bomb whose header is honest about its 1 GiB is refused before inflating anything.
    honest = tmp_path / "honest.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**28,)}
    _zip(honest, {"__meta__.npy": _meta_npy(_records(_good(1))), "client_1.npy": _npy(header, b"")})
    with pytest.raises(ShardUnreadable, match="over the"):
        load_shard(honest)


def test_stored_members_read_straight_from_the_file_are_still_checked_and_bounded(tmp_path):
    """save_bundle stores members uncompressed, and load_bundle reads them straight from
    the file, not through zipfile's reader: a flipped byte still fails the member's
    CRC-32, and a member larger than the budget is refused before it is read."""
    good = tmp_path / "good.npz"
    save_shard(good, 1, 0, [_good(0)])
    raw = bytearray(good.read_bytes())
    at = raw.index(np.full(8, 0.1, np.float32).tobytes())  # client 0's vector
    raw[at + 3] ^= 0x01
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(ShardUnreadable, match="CRC-32"):
        load_shard(flipped)
    (update,) = load_shard(good)
    update.vector[0] = 1.0  # arrays are the reader's own, writable, like np.load's
    big = tmp_path / "big.npz"
    wire.save_bundle(big, {"w": np.zeros(100_000, np.float32)}, {})
    with pytest.raises(wire.BundleUnreadable, match="w.npy: 400128 bytes stored, over the"):
        wire.load_bundle(big, max_bytes=1000)  # refused before its data is read


def _assert_only_valid_updates_pass(paths) -> None:
    kept, rejections = _collect(COHORT, paths)  # never raises
    rnd = RoundContext(1, COHORT, {}, {}, SPEC, secure=False)
    screened = UpdateValidation().on_updates(kept, rnd)  # never raises
    accepted, rejected = screened.kept, screened.rejected
    assert len({u.client_id for u in accepted}) == len(accepted)
    for u in accepted:
        assert u.client_id in COHORT and u.encoding == "float32" and u.num_examples > 0
        assert u.vector.dtype == np.float32 and u.vector.shape == (SPEC.size,)
        assert np.isfinite(u.vector).all() and wire.checksum(u.vector) == u.checksum
    for r in [*rejections, *rejected]:
        assert isinstance(r.reason, str) and r.reason


_FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@_FUZZ
@given(
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    truncate=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_fuzz_corrupted_shard_bytes_never_crash_aggregate(tmp_path_factory, cuts, truncate):
    path = tmp_path_factory.mktemp("fuzz") / "shard.npz"
    save_shard(path, 1, 0, [_good(0), _good(1)])
    data = bytearray(path.read_bytes())
    for offset, value in cuts:
        data[offset % len(data)] = value
    if truncate is not None:
        data = data[: truncate % (len(data) + 1)]
    path.write_bytes(bytes(data))
    _assert_only_valid_updates_pass([path])


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)


@_FUZZ
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {
                "client_id": st.one_of(st.integers(-3, 5), _values),
                "num_examples": st.one_of(st.integers(-5, 50), _values),
                "train_loss": _values,
                "duration_s": _values,
                "checksum": st.one_of(st.just("keep"), _values),
                "encoding": st.sampled_from(["float32", "secagg", "x"]),
            },
            optional={"extra": _values},
        ),
        max_size=4,
    ),
    dtype=st.sampled_from(["<f4", "<f8", "<i4", "|u1", "<U3", "<c8"]),
    length=st.integers(0, 12),
    poison=st.sampled_from([None, np.nan, np.inf, 1e30]),
    meta_kind=st.sampled_from(["dict", "list", "string", "number"]),
)
def test_fuzz_crafted_bundles_never_crash_aggregate_nor_pass_a_bad_update(
    tmp_path_factory, records, dtype, length, poison, meta_kind
):
    path = tmp_path_factory.mktemp("crafted") / "shard.npz"
    members = {}
    for r in records:
        vector = np.full(length, 0.1).astype(dtype) if dtype != "<U3" else np.array(["a"] * length)
        if poison is not None and length and dtype in ("<f4", "<f8"):
            vector[0] = poison
        if r["checksum"] == "keep":
            r["checksum"] = wire.checksum(vector)
        members[f"client_{r['client_id']}.npy"] = _npy(
            {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": vector.shape},
            vector.tobytes(),
        )
    meta = {"dict": {"round": 1, "updates": records}, "list": records, "string": "x"}.get(
        meta_kind, 7
    )
    try:
        members["__meta__.npy"] = _meta_npy(meta)
    except (TypeError, ValueError):  # not JSON-serialisable: a file that says so instead
        members["__meta__.npy"] = b"\x93NUMPY garbage"
    _zip(path, members)
    _assert_only_valid_updates_pass([path])


def test_simulated_attackers_skip_the_client_side_clip_under_secure_aggregation():
    """Under SecAgg the clip runs in the client, so a hostile client does not run it: the
    simulated attacker sends its scaled update unclipped (the server cannot tell)."""
    from fedpipe import config
    from fedpipe.secagg import rounds as sa
    from fedpipe.simulation import attacks, mods

    cfg = config.from_mapping(
        {
            "data.num_clients": 10,
            "selection.cohort_size": 10,
            "aggregation.secure.mode": "secagg",
            "aggregation.rule": "norm_bounding",
            "aggregation.norm_bound": 0.1,
            "simulation.attack.kind": "scaling",
            "simulation.attack.fraction": 0.2,
        }
    )
    hostile = attacks.attackers(cfg)
    honest = next(c for c in range(10) if c not in hostile)
    big = np.full(100, 0.05)  # norm 0.5 > norm_bound
    chain = build_chain(cfg)

    def transform(client_id: int):
        ctx = ClientContext(client_id, 1, 10, None, {}, secure=True)
        skips = mods.Attack(cfg, 10).skips_client_steps(client_id)
        return sa.client_transform(chain, ctx, honest=not skips)

    assert np.linalg.norm(transform(honest)(big)) <= 0.1 + 1e-9
    for c in hostile:
        assert np.array_equal(transform(c)(big), big)
    # What bounds the damage: the encoding's coordinate range (secagg_clip), nothing else.
    encoding = secagg_encoding.encoding_for(cfg, 10)
    words = encoding.encode(np.full(100, 1e6), cfg.aggregation.secure.max_examples)
    assert encoding.decode_mean(words)[0].max() == pytest.approx(cfg.aggregation.secure.clip)
