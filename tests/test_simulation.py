import numpy as np

from fedpipe import stages
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.round_plan import Cohort
from fedpipe.clients import selection
from fedpipe.ops import tracking
from fedpipe.simulation.runner import simulate
from fedpipe.stages.register import _decide


def test_simulation_learns_logs_rounds_and_promotes_the_first_model(small_config, tmp_path):
    result = simulate(small_config, tmp_path / "sim")
    client = tracking.client(small_config)
    accuracy = client.get_metric_history(result.mlflow_run_id, "accuracy")
    assert [m.step for m in accuracy] == [0, 1, 2, 3]
    assert accuracy[-1].value > accuracy[0].value + 0.3
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["data.num_clients"] == "6" and run.info.status == "FINISHED"
    assert "per_client/train_loss/0" in run.data.metrics
    assert result.registration.promoted and result.registration.version == "1"
    champion = client.get_model_version_by_alias("fedpipe-test", "champion")
    assert str(champion.version) == "1" and champion.tags["rounds"] == "3"
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert {"accuracy_per_round.png", "client_participation.png"} <= artifacts


def test_same_config_gives_the_same_model_and_is_not_promoted_again(small_config, tmp_path):
    first = simulate(small_config, tmp_path / "a")
    second = simulate(small_config, tmp_path / "b")
    assert np.array_equal(first.model.weights, second.model.weights)
    assert not second.registration.promoted
    assert "below margin" in second.registration.reason
    champion = tracking.client(small_config).get_model_version_by_alias("fedpipe-test", "champion")
    assert str(champion.version) == "1"


def test_promotion_needs_a_gain_of_at_least_the_margin():
    assert _decide(0.90, None, 0.01)[0]
    assert _decide(0.92, 0.90, 0.01)[0]
    assert not _decide(0.905, 0.90, 0.01)[0]
    assert not _decide(0.90, 0.90, 0.0)[0]


def test_target_reached_turns_later_rounds_into_pass_throughs(small_config, tmp_path):
    cfg = small_config.replace({"training.rounds": 4, "training.target_accuracy": 0.3})
    result = simulate(cfg, tmp_path / "sim", register=False)
    registry = ClientRegistry.load(tmp_path / "sim" / "round_004" / "registry.json")
    reached = registry.target_reached_at
    assert reached is not None and reached < 4
    assert Cohort.load(tmp_path / "sim" / f"round_{reached + 1:03d}" / "cohort.json").stopped
    assert result.accuracy[reached - 1 :] == [result.accuracy[reached - 1]] * (5 - reached)
    assert registry.completed_rounds == reached


def test_selection_is_seeded_by_run_and_round(small_config, tmp_path):
    cfg = small_config.replace({"data.num_clients": 20, "selection.cohort_size": 5})
    model, registry = tmp_path / "m", tmp_path / "r"
    stages.initialize(cfg, model, registry, run_name="t")
    reg = ClientRegistry.load(registry)
    policy = selection.UniformRandom()
    picks = [policy.select(reg, 5, selection.round_rng(cfg.seed, n)) for n in (1, 1, 2)]
    assert picks[0] == picks[1] != picks[2] and len(set(picks[0])) == 5
    shards = stages.select(cfg, 1, registry, tmp_path / "cohort")
    cohort = Cohort.load(tmp_path / "cohort")
    assert shards == [0, 1] and cohort.clients == picks[0]
    assert cohort.shards == [picks[0][:3], picks[0][3:]]
