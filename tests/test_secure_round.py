"""Secure aggregation inside federated rounds: the stages, the simulation, the config."""

import json

import numpy as np
import pytest

from fedpipe import config, preflight, secagg
from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.artifacts.updates import load_shard
from fedpipe.ops import tracking
from fedpipe.secagg.quantization import TRAILING_WORDS
from fedpipe.simulation.runner import simulate


@pytest.fixture
def two_rounds(small_config):
    return small_config.replace({"training.rounds": 2})


def test_secure_rounds_learn_like_plain_ones_and_the_server_sees_only_masked_inputs(
    two_rounds, tmp_path
):
    plain = simulate(two_rounds, tmp_path / "plain", register=False)
    secure = simulate(
        two_rounds.replace({"aggregation.secure.mode": "secagg"}),
        tmp_path / "secure",
        register=False,
    )
    assert abs(secure.accuracy[-1] - plain.accuracy[-1]) <= 0.01
    # What the aggregate stage reads: masked words, no example counts, nothing like a delta.
    plain_updates = {u.client_id: u for u in load_shard(tmp_path / "plain/round_001/updates_0.npz")}
    for u in load_shard(tmp_path / "secure/round_001/updates_0.npz"):
        assert u.encoding == "secagg" and u.num_examples == 0 and u.vector.dtype == np.uint32
        delta = plain_updates[u.client_id].vector
        assert abs(np.corrcoef(u.vector[:-TRAILING_WORDS].astype(float), delta)[0, 1]) < 0.1
        assert u.train_loss == 0.0  # its loss is inside the masked vector too
    outcome = AggregationOutcome.load(tmp_path / "secure/round_002/outcome.json")
    assert outcome.metrics["secagg/survivors"] == 6
    assert "| secagg/survivors | 6 |" in outcome.to_markdown()
    # The server learns the cohort's mean loss, unmasked with the sum, and no client's.
    mlflow = tracking.client(two_rounds)
    plain_run, secure_run = (mlflow.get_run(r.mlflow_run_id) for r in (plain, secure))
    assert any(k.startswith("per_client/train_loss/") for k in plain_run.data.metrics)
    assert not [k for k in secure_run.data.metrics if k.startswith("per_client/train_loss/")]
    first = [
        mlflow.get_metric_history(r.info.run_id, "train_loss")[0] for r in (plain_run, secure_run)
    ]
    assert first[0].step == first[1].step == 1  # same model and seeds in round 1: same losses
    assert first[1].value == pytest.approx(first[0].value, abs=1e-3)  # to fixed-point steps
    registry = json.loads((tmp_path / "secure/round_002/registry.json").read_text())
    assert all(c["last_train_loss"] is None for c in registry["clients"])
    assert "| masked | masked | masked |" in outcome.to_markdown(client_level=True)


def test_dropped_clients_are_recovered_and_the_protocol_is_logged(two_rounds, tmp_path):
    cfg = two_rounds.replace(
        {"aggregation.secure.mode": "secagg+", "simulation.faults.secagg_dropout": 0.2}
    )
    result = simulate(cfg, tmp_path / "sim", register=False)
    outcome = AggregationOutcome.load(tmp_path / "sim/round_001/outcome.json")
    assert outcome.metrics["secagg/dropouts_recovered"] == 1
    assert outcome.metrics["secagg/survivors"] == len(outcome.accepted) == 5
    assert [r.reason for r in outcome.rejected] == ["no update received"]
    assert result.accuracy[-1] > 0.5
    history = tracking.client(cfg).get_metric_history(
        result.mlflow_run_id, "secagg/dropouts_recovered"
    )
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 1.0)]


def test_below_threshold_the_round_aborts_and_the_previous_model_stands(small_config, tmp_path):
    # t = ceil(0.6 * 6) = 4 holders per secret; half the cohort drops after sharing keys.
    cfg = small_config.replace(
        {
            "training.rounds": 1,
            "aggregation.secure.mode": "secagg",
            "simulation.faults.secagg_dropout": 0.5,
        }
    )
    with pytest.raises(secagg.ThresholdNotMet, match="need 4 surviving share holders"):
        simulate(cfg, tmp_path / "sim", register=False)
    assert not (tmp_path / "sim/round_001/model.npz").exists()
    assert not (tmp_path / "sim/round_001/outcome.json").exists()
    GlobalModel.load(tmp_path / "sim/round_000/model.npz")  # intact, checksum verified
    # The server asked the clients for no shares at all.
    assert not (tmp_path / "sim/round_001/secagg_unmask_request.json").exists()
    (shares,) = json.loads((tmp_path / "sim/round_001/secagg_share_keys_0.json").read_text())
    assert len(shares["messages"]) == 3  # the keys were shared before the dropouts


def test_config_refuses_aggregators_that_need_individual_updates():
    with pytest.raises(config.ConfigError, match="krum needs individual updates"):
        preflight.check(
            config.from_mapping({"aggregation.secure.mode": "secagg+", "aggregation.rule": "krum"})
        )
    with pytest.raises(config.ConfigError, match="aggregation.secure.mode"):
        config.from_mapping({"aggregation.secure.mode": "on"})
    with pytest.raises(config.ConfigError, match="aggregation.secure.threshold"):
        config.from_mapping(
            {"aggregation.secure.mode": "secagg", "aggregation.secure.threshold": 0.5}
        )
    with pytest.raises(config.ConfigError, match="aggregation.secure.fractional_bits"):
        preflight.check(
            config.from_mapping(
                {
                    "aggregation.secure.mode": "secagg",
                    "aggregation.secure.fractional_bits": 40,
                    "aggregation.secure.clip": 1e6,
                }
            )
        )
    secure = config.from_mapping({"aggregation.secure.mode": "secagg+"})
    assert secure.aggregation.secure.neighbours is None


def test_secagg_experiment_table_compares_each_variant_with_plain():
    from fedpipe.experiments.secagg import VariantResult, plot, table_rows

    results = [
        VariantResult("plain", [0.5, 0.9], 0, 0.0),
        VariantResult("secagg+ 20% dropout", [0.4, 0.885], 4, 2048.0),
    ]
    rows = table_rows(results)
    assert rows[1]["vs_plain_points"] == -1.5 and rows[1]["kib_per_client_per_round"] == 2.0
    assert [line.get_label() for line in plot(results).axes[0].lines] == [r.name for r in results]


def test_dp_under_secure_aggregation_noises_the_sum_inside_the_clients(small_config, tmp_path):
    """Clients clip and add their noise share before masking: without noise the secure
    round equals central DP-FedAvg, with noise the mean moves by z C sqrt(n / m) / n."""
    dp = small_config.replace(
        {"training.rounds": 1, "aggregation.dp.clip_norm": 0.05, "aggregation.dp.delta": 1e-3}
    )
    central = simulate(dp, tmp_path / "central", register=False)
    clean = simulate(
        dp.replace({"aggregation.secure.mode": "secagg"}), tmp_path / "clean", register=False
    )
    assert np.allclose(clean.model.weights, central.model.weights, atol=1e-5)
    noisy_cfg = dp.replace(
        {"aggregation.secure.mode": "secagg", "aggregation.dp.noise_multiplier": 1.0}
    )
    noisy = simulate(noisy_cfg, tmp_path / "noisy", register=False)
    noise = noisy.model.weights - clean.model.weights
    n, m = dp.selection.cohort_size, dp.min_valid_updates
    expected = 1.0 * 0.05 * np.sqrt(n / m) / n
    assert np.std(noise) == pytest.approx(expected, rel=0.05)


def test_secure_aggregation_announces_adaptive_weights_to_the_clients(small_config, tmp_path):
    cfg = small_config.replace(
        {
            "training.rounds": 1,
            "selection.client_weighting": "adaptive",
            "selection.max_client_weight": 0.3,
        }
    )
    plain = simulate(cfg, tmp_path / "plain", register=False)
    secure = simulate(
        cfg.replace({"aggregation.secure.mode": "secagg"}), tmp_path / "sec", register=False
    )
    assert np.allclose(secure.model.weights, plain.model.weights, atol=1e-4)


def test_adaptive_dp_clipping_is_refused_under_secure_aggregation(small_config):
    with pytest.raises(config.ConfigError) as error:
        preflight.check(
            small_config.replace(
                {
                    "aggregation.secure.mode": "secagg",
                    "aggregation.dp.clip_norm": 0.1,
                    "aggregation.dp.clipping": "adaptive",
                    "aggregation.dp.delta": 1e-3,
                }
            )
        )
    assert error.value.field == "aggregation.dp.clipping"


@pytest.mark.parametrize("aggregator", ["median", "trimmed_mean", "krum", "multi_krum"])
def test_secure_aggregation_refuses_aggregators_and_screening_that_need_single_updates(
    aggregator,
):
    secure = config.from_mapping({"aggregation.secure.mode": "secagg"})
    with pytest.raises(config.ConfigError) as error:
        preflight.check(secure.replace({"aggregation.rule": aggregator}))
    assert error.value.field == "aggregation.rule"
    assert "needs individual updates" in str(error.value)
    with pytest.raises(config.ConfigError) as error:
        preflight.check(secure.replace({"aggregation.screening.policy": "exclude"}))
    assert error.value.field == "aggregation.layers" and "screening" in str(error.value)


def test_secure_aggregation_refuses_selection_by_each_clients_loss():
    secure = config.from_mapping({"aggregation.secure.mode": "secagg+"})
    with pytest.raises(config.ConfigError) as error:
        preflight.check(secure.replace({"selection.policy": "power_of_choice"}))
    assert error.value.field == "selection.policy"
    assert "uniform, oort, linucb under secure aggregation" in str(error.value)
    for policy in ("uniform", "oort", "linucb"):  # they do without a client's loss
        assert preflight.check(secure.replace({"selection.policy": policy}))


def test_norm_bounding_under_secure_aggregation_clips_in_the_clients(small_config, tmp_path):
    cfg = small_config.replace(
        {"training.rounds": 1, "aggregation.rule": "norm_bounding", "aggregation.norm_bound": 0.05}
    )
    plain = simulate(cfg, tmp_path / "plain", register=False)
    secure = simulate(
        cfg.replace({"aggregation.secure.mode": "secagg"}), tmp_path / "sec", register=False
    )
    assert np.allclose(secure.model.weights, plain.model.weights, atol=1e-5)
    unbounded = simulate(
        small_config.replace({"training.rounds": 1}), tmp_path / "fedavg", register=False
    )
    assert not np.allclose(unbounded.model.weights, plain.model.weights, atol=1e-3)
