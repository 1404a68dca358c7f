"""The model card of a registered version: what a reviewer needs to judge it, written as
the version's description in the MLflow registry (and as an artifact of its run)."""

from __future__ import annotations

import dataclasses

from fedpipe.config import RunConfig


@dataclasses.dataclass(frozen=True)
class ModelCard:
    model_name: str
    version: str
    model: str  # the architecture, e.g. "mlp"
    dataset: str
    partition: str  # how the training pool was split over clients
    num_clients: int
    training_pool: int  # examples in the training pool
    heldout: int  # examples in the held-out set
    heldout_digest: str
    rounds: int  # rounds completed
    rounds_planned: int
    aggregation: str  # the aggregation chain, in the order it runs
    privacy: str  # "no DP", or the guarantee with epsilon and delta
    accuracy: float
    loss: float
    promoted: bool
    promotion: str  # why (not) promoted, with the margin
    promotion_margin: float
    pipeline_run: str
    mlflow_run_id: str
    mlflow_run_link: str  # the run's page, relative to the MLflow UI's root

    def to_markdown(self) -> str:
        verdict = "promoted to `@champion`" if self.promoted else "not promoted"
        return "\n".join(
            [
                f"# {self.model_name} version {self.version}",
                "",
                f"**Task**: {self.model} classifier on `{self.dataset}`, trained by federated "
                f"learning over {self.num_clients} clients.",
                "",
                f"- **Data**: training pool of {self.training_pool} examples split "
                f"{self.partition}; held-out set of {self.heldout} examples "
                f"(digest `{self.heldout_digest}`), never seen by a client.",
                f"- **Rounds**: {self.rounds} of {self.rounds_planned} planned.",
                f"- **Aggregation**: {self.aggregation}.",
                f"- **Privacy**: {self.privacy}.",
                f"- **Held-out accuracy**: {self.accuracy:.4f} (loss {self.loss:.4f}).",
                f"- **Promotion**: {verdict} (margin {self.promotion_margin:g}): {self.promotion}.",
                f"- **Pipeline run**: `{self.pipeline_run}`, MLflow run "
                f"[{self.mlflow_run_id}]({self.mlflow_run_link}).",
                "",
            ]
        )


def partition_of(config: RunConfig) -> str:
    """How the partitioner split the training pool, with its parameter."""
    detail = {
        "dirichlet": f"alpha={config.data.dirichlet_alpha:g}",
        "shards": f"{config.data.shards_per_client} shards per client",
        "quantity_skew": f"sigma={config.data.quantity_skew_sigma:g}",
    }.get(config.data.partitioner)
    return f"{config.data.partitioner} ({detail})" if detail else config.data.partitioner


def aggregation_of(config: RunConfig) -> str:
    """The aggregation chain as it runs: screening, secure aggregation, the aggregator,
    DP-FedAvg's clip and noise, then the server optimizer."""
    steps = []
    if config.aggregation.screening.policy != "off":
        steps.append(f"screening ({config.aggregation.screening.policy})")
    if config.aggregation.secure.mode != "off":
        steps.append(f"secure aggregation ({config.aggregation.secure.mode})")
    weighting = config.selection.client_weighting
    steps.append(
        config.aggregation.rule + ("" if weighting == "fedavg" else f", {weighting} weights")
    )
    dp = config.aggregation.dp
    if config.dp_enabled:
        steps.append(
            f"DP-FedAvg ({dp.clipping} clip {dp.clip_norm:g}, "
            f"noise multiplier {dp.noise_multiplier:g})"
        )
    steps.append(f"server optimizer {config.server.name} (lr {config.server.learning_rate:g})")
    return " → ".join(steps)


def privacy_of(config: RunConfig, spent_epsilon: float | None) -> str:
    """The guarantee in words: "no DP", or the (epsilon, delta) spent."""
    parts = []
    if config.dp_enabled:
        eps = "∞ (no noise)" if spent_epsilon is None else f"{spent_epsilon:.4g}"
        dp = config.aggregation.dp
        parts.append(f"client-level DP, ε = {eps}, δ = {dp.delta:g} ({dp.accountant})")
    if config.training.dp_sgd_clip_norm is not None:
        parts.append(
            f"sample-level DP-SGD in each silo (clip {config.training.dp_sgd_clip_norm:g}, "
            f"noise multiplier {config.training.dp_sgd_noise_multiplier:g})"
        )
    return "; ".join(parts) if parts else "no DP"
