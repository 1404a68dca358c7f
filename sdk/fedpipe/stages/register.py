"""Register: log the final model to MLflow, register a version, and move the `champion`
alias to it only when it beats the current champion on the same held-out set."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.config import RunConfig
from fedpipe.data import datasets
from fedpipe.ops import model_card, plots, tracking
from fedpipe.privacy import accounting as privacy_accounting
from fedpipe.privacy import dp_fedavg, randomness
from fedpipe.training import forward, trainer
from fedpipe.training.trainer import Evaluation

CHAMPION = "champion"


@dataclasses.dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    accuracy: float
    champion_accuracy: float | None  # the previous champion on this held-out set
    promoted: bool
    reason: str

    def to_markdown(self) -> str:
        verdict = "promoted to" if self.promoted else "not promoted to"
        return (
            f"# Registration\n\nModel `{self.model_name}` version {self.version} "
            f"(held-out accuracy {self.accuracy:.4f}) {verdict} `@{CHAMPION}`: {self.reason}\n"
        )


def _champion_accuracy(
    config: RunConfig, x: np.ndarray, y: np.ndarray, num_classes: int
) -> tuple[float, str] | None:
    """Score the current champion on this run's held-out set: (accuracy, version), or
    None when there is no champion yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        version = tracking.client(config).get_model_version_by_alias(
            config.tracking.registered_model_name, CHAMPION
        )
    except MlflowException:
        return None
    champion = mlflow.keras.load_model(
        f"models:/{config.tracking.registered_model_name}@{CHAMPION}"
    )
    try:
        probs = champion.predict(x, verbose=0)
    except ValueError as e:  # another input shape: a champion of a different task
        raise ValueError(
            f"champion version {version.version} of "
            f"'{config.tracking.registered_model_name}' cannot "
            f"score this run's held-out set ({e}); use another registered_model_name"
        ) from e
    return trainer.score(probs, y, num_classes).accuracy, str(version.version)


def _decide(accuracy: float, champion: float | None, margin: float) -> tuple[bool, str]:
    if champion is None:
        return True, "there was no champion"
    gain = accuracy - champion
    if gain > 0 and gain >= margin:
        return True, f"beats the champion ({champion:.4f}) by {gain:+.4f} >= margin {margin}"
    return False, f"gain over the champion ({champion:.4f}) is {gain:+.4f}, below margin {margin}"


def _privacy_tags(config: RunConfig, model: GlobalModel, rounds: int) -> dict[str, str]:
    """What the model's DP guarantee is, for whoever deploys it (none when DP is off)."""
    if not config.dp_enabled:
        return {}
    spent = privacy_accounting.reported_epsilon(config, rounds)
    tags = {
        "dp_epsilon": "inf" if spent is None else f"{spent:.6g}",
        "dp_delta": f"{config.aggregation.dp.delta:g}",
        "dp_noise_multiplier": f"{config.aggregation.dp.noise_multiplier:g}",
        "dp_clip_norm": f"{config.aggregation.dp.clip_norm:g}",
        "dp_clipping": config.aggregation.dp.clipping,
        "dp_accountant": config.aggregation.dp.accountant,
        "dp_rounds": str(rounds),
    }
    if config.aggregation.dp.clipping == "adaptive":  # dp_clip_norm was the initial one
        tags["dp_clip_norm_next"] = f"{dp_fedavg.clip_norm(config, model.server_state):.6g}"
    return tags


def _log_datasets(config: RunConfig, data: datasets.Dataset) -> None:
    """The training pool (before it is split over clients) and the held-out set, through
    MLflow's dataset tracking: schema, profile and digest only, no rows of any client."""
    import mlflow

    partition = model_card.partition_of(config)
    pool = mlflow.data.from_numpy(
        data.x_train, targets=data.y_train, name=f"{config.data.dataset}-training-pool"
    )
    heldout = mlflow.data.from_numpy(
        data.x_heldout, targets=data.y_heldout, name=f"{config.data.dataset}-heldout"
    )
    mlflow.log_input(pool, context="training", tags={"partition": partition})
    mlflow.log_input(heldout, context="evaluation", tags={"digest": data.heldout_digest})


def register(
    config: RunConfig,
    model_path: str | Path,
    registry_path: str | Path,
    mlflow_run_id: str,
    pipeline_run: str,
) -> Registration:
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    model = GlobalModel.load(model_path)
    registry = ClientRegistry.load(registry_path)
    result, data = forward.heldout_evaluation(config, model.weights, model.spec)
    champion = _champion_accuracy(config, data.x_heldout, data.y_heldout, data.num_classes)
    champion_accuracy = champion[0] if champion else None
    promoted, reason = _decide(result.accuracy, champion_accuracy, config.tracking.promotion_margin)
    if champion:
        reason += f" (champion is version {champion[1]})"

    mlflow_client = tracking.client(config)
    history = [
        (m.step, m.value) for m in mlflow_client.get_metric_history(mlflow_run_id, "accuracy")
    ]
    # The final round's metrics (and the final scores, logged at that step) are the ones
    # log_model links to the logged model: it links those of the step it is given.
    final_round = registry.completed_rounds
    now = int(time.time() * 1000)
    mlflow_client.log_batch(
        mlflow_run_id,
        metrics=[
            Metric("final_accuracy", result.accuracy, now, final_round),
            Metric("final_loss", result.loss, now, final_round),
        ],
    )
    model_trainer = trainer.for_config(config)
    model_trainer.set_weights(model.weights)
    sample = data.x_heldout[:5]
    with mlflow.start_run(run_id=mlflow_run_id):
        mlflow.log_figure(
            plots.accuracy_per_round(history, config.training.target_accuracy),
            "accuracy_per_round.png",
        )
        if registry.client_level:  # under DP the registry holds no history to show
            mlflow.log_figure(plots.client_participation(registry), "client_participation.png")
            mlflow.log_dict(dataclasses.asdict(registry), "clients/registry.json")
        _log_datasets(config, data)
        info = mlflow.keras.log_model(
            model_trainer.model,
            name="model",
            step=final_round,
            signature=infer_signature(sample, model_trainer.model.predict(sample, verbose=0)),
            pip_requirements=[f"tensorflow-cpu=={tf.__version__}", f"keras=={keras.__version__}"],
        )
    version = mlflow.register_model(
        info.model_uri,
        config.tracking.registered_model_name,
        tags={
            "pipeline_run": pipeline_run,
            "mlflow_run_id": mlflow_run_id,
            "rounds": str(final_round),
            "dataset": config.data.dataset,
            "partition": config.data.partitioner,
            "heldout_digest": data.heldout_digest,
            "accuracy": f"{result.accuracy:.6f}",
            **_privacy_tags(config, model, final_round),
            **randomness.run_tags(config.privacy.mode),
        },
    )
    if promoted:
        mlflow_client.set_registered_model_alias(
            config.tracking.registered_model_name, CHAMPION, version.version
        )
    mlflow_client.set_model_version_tag(
        config.tracking.registered_model_name, version.version, "promotion", f"{promoted}: {reason}"
    )
    experiment = mlflow_client.get_run(mlflow_run_id).info.experiment_id
    card = _card(config, data, str(version.version), final_round, result, (promoted, reason))
    card = dataclasses.replace(
        card,
        pipeline_run=pipeline_run,
        mlflow_run_id=mlflow_run_id,
        mlflow_run_link=f"#/experiments/{experiment}/runs/{mlflow_run_id}",
    )
    mlflow_client.update_model_version(
        config.tracking.registered_model_name, version.version, description=card.to_markdown()
    )
    mlflow_client.log_text(mlflow_run_id, card.to_markdown(), "model_card.md")
    registration = Registration(
        config.tracking.registered_model_name,
        str(version.version),
        result.accuracy,
        champion_accuracy,
        promoted,
        reason,
    )
    print(registration.to_markdown().splitlines()[-1], flush=True)
    return registration


def _card(
    config: RunConfig,
    data: datasets.Dataset,
    version: str,
    rounds: int,
    result: Evaluation,
    verdict: tuple[bool, str],
) -> model_card.ModelCard:
    """The model card's facts from the run config, read in this one place (the pipeline
    run and its MLflow run are filled in by the caller)."""
    return model_card.ModelCard(
        model_name=config.tracking.registered_model_name,
        version=version,
        model=config.model.name,
        dataset=config.data.dataset,
        partition=model_card.partition_of(config),
        num_clients=config.data.num_clients,
        training_pool=len(data.y_train),
        heldout=len(data.y_heldout),
        heldout_digest=data.heldout_digest,
        rounds=rounds,
        rounds_planned=config.training.rounds,
        aggregation=model_card.aggregation_of(config),
        privacy=model_card.privacy_of(
            config,
            privacy_accounting.reported_epsilon(config, rounds) if config.dp_enabled else None,
        ),
        accuracy=result.accuracy,
        loss=result.loss,
        promoted=verdict[0],
        promotion=verdict[1],
        promotion_margin=config.tracking.promotion_margin,
        pipeline_run="",
        mlflow_run_id="",
        mlflow_run_link="",
    )
