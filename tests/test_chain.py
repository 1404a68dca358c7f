"""The aggregation chain: a layer from outside fedpipe composes in, and every layer's
report reaches MLflow the same way from the simulation and from the pipeline."""

import numpy as np
import pytest

from fedpipe import config, preflight
from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import Aggregate, Layer, RoundContext
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.ops import local_run, tracking
from fedpipe.simulation.runner import simulate


class HalvedStep(Layer):
    """A layer written by a user: it halves the aggregated update and says so."""

    name = "halved_step"

    def on_aggregate(self, aggregate: Aggregate, rnd: RoundContext) -> Aggregate:
        self.round = rnd.round_number
        aggregate.total = aggregate.total * 0.5
        return aggregate

    def report(self) -> dict[str, float]:
        return {"halved_step/round": float(self.round)}


def halved_step(run_config: config.RunConfig) -> HalvedStep:
    return HalvedStep()


def test_a_layer_from_a_test_file_is_composed_and_used_in_a_simulated_run(small_config, tmp_path):
    one_round = small_config.replace({"training.rounds": 1})
    custom = one_round.replace({"aggregation.layers": ["tests.test_chain:halved_step"]})
    assert "halved_step" in build_chain(custom).describe()
    plain = simulate(one_round, tmp_path / "plain", register=False)
    halved = simulate(custom, tmp_path / "halved", register=False)
    start = GlobalModel.load(tmp_path / "plain/round_000/model.npz").weights
    # Round 1 trains the same clients from the same model: only the layer differs.
    assert np.allclose(halved.model.weights - start, 0.5 * (plain.model.weights - start), atol=1e-6)
    history = tracking.client(custom).get_metric_history(halved.mlflow_run_id, "halved_step/round")
    assert [(m.step, m.value) for m in history] == [(1, 1.0)]


def test_a_layer_that_cannot_be_imported_is_refused_naming_the_field(small_config):
    bad = small_config.replace({"aggregation.layers": ["tests.test_chain:no_such_layer"]})
    with pytest.raises(config.ConfigError) as err:
        preflight.check(bad)
    assert err.value.field == "aggregation.layers"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"aggregation.rule": "median"}, "aggregation.rule"),
        ({"aggregation.screening.policy": "flag"}, "aggregation.layers"),
        (
            {"aggregation.dp.clip_norm": 1.0, "aggregation.dp.clipping": "adaptive"},
            "aggregation.dp.clipping",
        ),
    ],
)
def test_a_layer_that_needs_individual_updates_is_refused_below_secure_aggregation(
    small_config, changes, field
):
    secure = small_config.replace({"aggregation.secure.mode": "secagg+", **changes})
    with pytest.raises(config.ConfigError) as err:
        preflight.check(secure)
    assert err.value.field == field


@pytest.mark.pipeline
def test_dp_under_secagg_plus_logs_epsilon_and_clip_norm_every_round_in_both_runners(tmp_path):
    cfg = config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 6,
            "selection.clients_per_shard": 6,  # one shard: fewer secagg tasks per round
            "training.rounds": 2,
            "training.local_epochs": 1,
            "aggregation.secure.mode": "secagg+",
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.noise_multiplier": 0.5,
            "aggregation.dp.delta": 0.01,
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.registered_model_name": "fedpipe-chain-dp",
        }
    )
    simulated = simulate(cfg, tmp_path / "sim", run_name="simulated", register=False)
    local_run.run_pipeline(cfg, tmp_path / "pipeline_root")
    client = tracking.client(cfg)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )
    (pipeline_run,) = [r for r in runs if r.info.run_id != simulated.mlflow_run_id]

    def history(run_id: str, name: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run_id, name)]

    for name in ("epsilon", "dp_clip_norm"):
        from_simulation = history(simulated.mlflow_run_id, name)
        from_pipeline = history(pipeline_run.info.run_id, name)
        assert (
            [step for step, _ in from_simulation] == [step for step, _ in from_pipeline] == [1, 2]
        )
        assert [v for _, v in from_pipeline] == pytest.approx([v for _, v in from_simulation])
    assert history(simulated.mlflow_run_id, "dp_clip_norm") == [(1, 1.0), (2, 1.0)]
