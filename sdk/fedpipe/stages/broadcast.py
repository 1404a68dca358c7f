"""Broadcast: publish the round plan (global model, hyper-parameters, cohort) to clients."""

from __future__ import annotations

from pathlib import Path

from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.artifacts.round_plan import Cohort, LocalTraining, RoundPlan
from fedpipe.config import RunConfig


def broadcast(
    config: RunConfig, model_path: str | Path, cohort_path: str | Path, plan_path: str | Path
) -> None:
    model = GlobalModel.load(model_path)
    RoundPlan(
        cohort=Cohort.load(cohort_path),
        weights=model.weights,
        spec=model.spec,
        training=LocalTraining(
            epochs=config.training.local_epochs,
            batch_size=config.training.batch_size,
            learning_rate=config.training.learning_rate,
            fedprox_mu=config.training.fedprox_mu,
        ),
        seed=config.seed,
    ).save(plan_path)
