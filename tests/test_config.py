import pytest

from fedpipe import config
from fedpipe.config import ConfigError


def test_defaults_are_the_embedded_demo():
    cfg = config.RunConfig()
    assert (cfg.data.dataset, cfg.data.num_clients, cfg.data.partitioner) == (
        "digits",
        10,
        "dirichlet",
    )
    assert cfg.shard_count == 2


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("data.dataset", "cifar", "one of digits, breast_cancer, mnist"),
        ("data.num_clients", 0, "an integer in [2, 100000]"),
        ("data.num_clients", 2.5, "an integer in [2, 100000]"),
        ("aggregation.quorum", 0, "a fraction of the cohort in (0, 1]"),
        ("server.momentum", 1.0, "a number in [0, 1)"),
        ("training.learning_rate", -0.1, "a number in (0, 10]"),
        ("training.target_accuracy", 1.5, "null or an accuracy in (0, 1]"),
        ("training.local_epochs", True, "an integer in [1, 100]"),
    ],
)
def test_bad_values_are_refused_naming_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        config.from_mapping({field: value})
    assert (err.value.field, err.value.value, err.value.allowed) == (field, value, allowed)
    assert f"'{field}' = {value!r}" in str(err.value)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="cohort_size.*at most data.num_clients"):
        config.from_mapping({"data.num_clients": 4, "selection.cohort_size": 5})
    with pytest.raises(ConfigError, match="data_dir.*MNIST IDX"):
        config.from_mapping({"data.dataset": "mnist"})


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError, match="'training.lr'.*a known field"):
        config.from_mapping({"training.lr": 0.1})


def test_yaml_then_overrides_and_json_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "seed: 3\ndata:\n  num_clients: 20\nselection:\n  cohort_size: 8\n"
        "training:\n  target_accuracy: 0.9\n"
    )
    cfg = config.load(path, {"seed": 7, "training.target_accuracy": None})
    assert (cfg.data.num_clients, cfg.selection.cohort_size, cfg.seed) == (20, 8, 7)
    assert cfg.training.target_accuracy is None
    assert config.from_json(cfg.to_json()) == cfg


def test_non_mapping_yaml_is_refused(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="a YAML mapping"):
        config.load(path)


def test_quorum_in_clients():
    assert (
        config.from_mapping(
            {"selection.cohort_size": 10, "aggregation.quorum": 0.5}
        ).min_valid_updates
        == 5
    )
    assert (
        config.from_mapping(
            {"selection.cohort_size": 10, "aggregation.quorum": 0.51}
        ).min_valid_updates
        == 6
    )
    assert (
        config.from_mapping(
            {"selection.cohort_size": 3, "aggregation.quorum": 0.01}
        ).min_valid_updates
        == 1
    )


def test_local_paths_become_absolute(tmp_path):
    cfg = config.resolve_local_paths(config.RunConfig(), tmp_path)
    assert cfg.tracking.uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    remote = config.from_mapping({"tracking.uri": "http://mlflow:5000"})
    assert config.resolve_local_paths(remote, tmp_path) == remote


def test_unknown_rule_or_policy_is_refused_naming_the_registered_ones():
    from fedpipe import preflight
    from fedpipe.aggregation.chain import COMBINERS
    from fedpipe.clients import selection

    with pytest.raises(ConfigError) as err:
        preflight.check(config.from_mapping({"aggregation.rule": "mean_of_means"}))
    assert err.value.field == "aggregation.rule"
    assert all(name in err.value.allowed for name in COMBINERS)
    with pytest.raises(ConfigError) as err:
        preflight.check(config.from_mapping({"selection.policy": "random"}))
    assert err.value.field == "selection.policy"
    assert all(name in err.value.allowed for name in selection.POLICIES)


def test_an_old_flat_name_is_refused_with_its_new_name():
    with pytest.raises(ConfigError, match="now aggregation.dp.noise_multiplier"):
        config.from_mapping({"dp_noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="now aggregation.secure.mode"):
        config.load(None, config.parse_overrides(["secure_aggregation=secagg"]))


def test_documented_words_parse_as_documented(tmp_path):
    """YAML 1.1 reads `off` as false; the config's words stay words."""
    cfg = config.load(None, config.parse_overrides(["aggregation.secure.mode=off"]))
    assert cfg.aggregation.secure.mode == "off"
    path = tmp_path / "run.yaml"
    path.write_text("aggregation:\n  secure:\n    mode: off\n  screening:\n    policy: flag\n")
    assert config.load(path).aggregation.secure.mode == "off"
    overrides = config.parse_overrides(["aggregation.secure.mode=secagg+", "training.rounds=3"])
    cfg = config.load(path, overrides)
    assert (cfg.aggregation.secure.mode, cfg.aggregation.screening.policy) == ("secagg+", "flag")
    assert cfg.training.rounds == 3


def test_nested_and_dotted_names_are_the_same_field():
    nested = config.from_mapping({"aggregation": {"dp": {"clip_norm": 1.0}}})
    dotted = config.from_mapping({"aggregation.dp.clip_norm": 1.0})
    assert nested == dotted and nested.dp_enabled
    assert dict(nested.items())["aggregation.dp.clip_norm"] == 1.0
