"""The registered version explains itself to a reviewer who opens it in MLflow."""

from fedpipe.ops import tracking
from fedpipe.simulation.runner import simulate


def test_registered_version_carries_final_metrics_card_and_dataset(small_config, tmp_path):
    result = simulate(small_config, tmp_path / "sim", run_name="card-run")
    client = tracking.client(small_config)
    version = client.get_model_version(small_config.tracking.registered_model_name, "1")

    # The logged model's metrics are the final round's, not round 0's.
    # The version's source is the logged model (models:/<model id>).
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    on_model = {m.key: m for m in logged.metrics}
    assert on_model["accuracy"].step == small_config.training.rounds
    assert on_model["accuracy"].value == result.accuracy[-1]
    assert on_model["final_accuracy"].value == result.registration.accuracy
    assert on_model["accuracy"].value > 0.5  # trained, not the untrained 0.1
    assert {m.step for m in logged.metrics} == {small_config.training.rounds}

    card = version.description
    assert "3 of 3 planned" in card
    assert "fedavg" in card and "server optimizer fedavg" in card
    assert "no DP" in card
    assert "promoted to `@champion`" in card and "there was no champion" in card
    assert f"{result.registration.accuracy:.4f}" in card
    assert result.mlflow_run_id in card and "card-run" in card

    inputs = client.get_run(result.mlflow_run_id).inputs.dataset_inputs
    by_context = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs
    }
    assert by_context["training"].name == "digits-training-pool"
    assert by_context["evaluation"].name == "digits-heldout"
    assert by_context["training"].digest and by_context["training"].profile


def test_card_names_the_privacy_guarantee(small_config, tmp_path):
    cfg = small_config.replace(
        {
            "training.rounds": 2,
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.noise_multiplier": 1.0,
            "aggregation.dp.delta": 1e-4,
        }
    )
    simulate(cfg, tmp_path / "sim", run_name="dp-run")
    client = tracking.client(cfg)
    card = client.get_model_version(cfg.tracking.registered_model_name, "1").description
    assert "client-level DP, ε = " in card and "δ = 0.0001" in card
    assert "DP-FedAvg (fixed clip 1, noise multiplier 1)" in card
    assert "2 of 2 planned" in card
