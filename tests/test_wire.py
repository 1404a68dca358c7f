import numpy as np
import pytest

from fedpipe.artifacts import wire

SPEC = wire.WeightsSpec(names=("w", "b"), shapes=((3, 2), (2,)))


def test_flatten_and_split_round_trip():
    w, b = np.arange(6, dtype=np.float32).reshape(3, 2), np.array([7, 8], np.float32)
    vector = wire.flatten([w, b])
    assert vector.dtype == np.float32 and vector.shape == (SPEC.size,)
    back = SPEC.split(vector)
    assert np.array_equal(back[0], w) and np.array_equal(back[1], b)
    assert wire.WeightsSpec.from_dict(SPEC.to_dict()) == SPEC


def _rejection(vector, claimed=None):
    with pytest.raises(wire.UpdateRejected) as err:
        wire.validate_update(4, vector, SPEC, claimed or wire.checksum(vector))
    assert err.value.client_id == 4
    return err.value.reason


def test_bad_updates_are_rejected_with_the_reason():
    good = np.ones(8, np.float32)
    wire.validate_update(4, good, SPEC, wire.checksum(good))
    assert "shape (7,), expected (8,)" in _rejection(np.ones(7, np.float32))
    assert "dtype float64" in _rejection(np.ones(8, np.float64))
    assert "checksum mismatch" in _rejection(good, claimed=wire.checksum(good * 2))
    nan = good.copy()
    nan[3] = np.nan
    assert "1 non-finite values (NaN)" in _rejection(nan)
    inf = good.copy()
    inf[:2] = np.inf
    assert "2 non-finite values (Inf)" in _rejection(inf)


def test_bundle_keeps_arrays_and_metadata(tmp_path):
    path = tmp_path / "artifact"  # KFP output paths have no extension
    wire.save_bundle(path, {"a": np.arange(3)}, {"round": 2, "name": "x"})
    arrays, meta = wire.load_bundle(path)
    assert np.array_equal(arrays["a"], np.arange(3)) and meta == {"name": "x", "round": 2}
