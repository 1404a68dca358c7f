import pytest

from fedpipe import config
from fedpipe.config import ConfigError


def test_defaults_are_the_embedded_demo():
    cfg = config.RunConfig()
    assert (cfg.dataset, cfg.num_clients, cfg.partitioner) == ("digits", 10, "dirichlet")
    assert cfg.shard_count == 2


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("dataset", "cifar", "one of digits, breast_cancer, mnist"),
        ("num_clients", 0, "an integer in [2, 100000]"),
        ("num_clients", 2.5, "an integer in [2, 100000]"),
        ("quorum", 0, "a fraction of the cohort in (0, 1]"),
        ("server_momentum", 1.0, "a number in [0, 1)"),
        ("client_learning_rate", -0.1, "a number in (0, 10]"),
        ("target_accuracy", 1.5, "null or an accuracy in (0, 1]"),
        ("local_epochs", True, "an integer in [1, 100]"),
    ],
)
def test_bad_values_are_refused_naming_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        config.from_mapping({field: value})
    assert (err.value.field, err.value.value, err.value.allowed) == (field, value, allowed)
    assert f"'{field}' = {value!r}" in str(err.value)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="cohort_size.*at most num_clients"):
        config.RunConfig(num_clients=4, cohort_size=5)
    with pytest.raises(ConfigError, match="data_dir.*MNIST IDX"):
        config.RunConfig(dataset="mnist")


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError, match="'learning_rate'.*a known field"):
        config.from_mapping({"learning_rate": 0.1})


def test_yaml_then_overrides_and_json_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("num_clients: 20\ncohort_size: 8\nseed: 3\ntarget_accuracy: 0.9\n")
    cfg = config.load(path, {"seed": 7, "target_accuracy": None})
    assert (cfg.num_clients, cfg.cohort_size, cfg.seed) == (20, 8, 7)
    assert cfg.target_accuracy is None
    assert config.from_json(cfg.to_json()) == cfg


def test_non_mapping_yaml_is_refused(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="a YAML mapping"):
        config.load(path)


def test_quorum_in_clients():
    assert config.RunConfig(cohort_size=10, quorum=0.5).min_valid_updates == 5
    assert config.RunConfig(cohort_size=10, quorum=0.51).min_valid_updates == 6
    assert config.RunConfig(cohort_size=3, quorum=0.01).min_valid_updates == 1


def test_local_paths_become_absolute(tmp_path):
    cfg = config.resolve_local_paths(config.RunConfig(), tmp_path)
    assert cfg.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    remote = config.RunConfig(mlflow_tracking_uri="http://mlflow:5000")
    assert config.resolve_local_paths(remote, tmp_path) == remote


def test_every_named_policy_and_aggregator_exists():
    from fedpipe.aggregation import outcome as aggregation
    from fedpipe.clients import selection

    assert set(config.SELECTION_POLICIES) == set(selection.POLICIES)
    assert set(config.AGGREGATORS) == set(aggregation.AGGREGATORS)
