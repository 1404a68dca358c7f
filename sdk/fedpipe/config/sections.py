"""The sections of a run config, each a frozen dataclass that validates its own fields.

A field's metadata holds its check and the sentence that says what is allowed, so the
error a bad value raises and docs/config.md say the same thing. Names of pluggable things
(aggregation rules, selection policies) are checked where they are registered
(fedpipe.aggregation.chain, fedpipe.clients.selection), not listed here a second time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fedpipe.config import checks
from fedpipe.config.errors import ConfigError
from fedpipe.config.fault_schedule import ScheduledFault

DATASETS = ("digits", "breast_cancer", "mnist")
PARTITIONERS = ("iid", "dirichlet", "shards", "quantity_skew")
MODELS = ("logistic_regression", "mlp", "cnn")
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")
DP_CLIPPING = ("fixed", "adaptive")
DP_ACCOUNTANTS = ("rdp", "pld")
CLIENT_WEIGHTINGS = ("fedavg", "adaptive")
SECURE_MODES = ("off", "secagg", "secagg+")
SCREENING_POLICIES = ("off", "flag", "downweight", "exclude")
ATTACKS = ("none", "sign_flip", "scaling", "gaussian_noise", "label_flip")
CLIENT_RUNTIMES = ("simulated", "agents")
COMPRESSIONS = ("none", "q8", "q4", "topk")
PRIVACY_MODES = ("secure", "reproducible-simulation")


def setting(default: Any, check: checks.Check, allowed: str) -> Any:
    """A section field: its default, its check and what is allowed, in words."""
    return dataclasses.field(default=default, metadata={"check": check, "allowed": allowed})


def subsection(cls: type) -> Any:
    return dataclasses.field(default_factory=cls)


class Section:
    """Validates every checked field when built; a bad value raises ConfigError naming it."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if "check" in f.metadata and not f.metadata["check"](getattr(self, f.name)):
                raise ConfigError(f.name, getattr(self, f.name), f.metadata["allowed"])


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """What the federation trains on and how it is spread over the simulated clients."""

    dataset: str = setting("digits", checks.one_of(DATASETS), f"one of {', '.join(DATASETS)}")
    data_dir: str | None = setting(
        None,
        lambda v: v is None or isinstance(v, str),
        "a directory path, a file:// s3:// or gs:// folder URI, or null",
    )
    heldout_fraction: float = setting(
        0.2, checks.number(0.0, 0.9, low_open=True), "a number in (0, 0.9]"
    )
    partitioner: str = setting(
        "dirichlet", checks.one_of(PARTITIONERS), f"one of {', '.join(PARTITIONERS)}"
    )
    dirichlet_alpha: float = setting(
        0.5, checks.number(0.0, checks.INF, low_open=True), "a number > 0"
    )
    shards_per_client: int = setting(2, checks.integer(1), "an integer >= 1")
    quantity_skew_sigma: float = setting(1.0, checks.number(0.0, 10.0), "a number in [0, 10]")
    num_clients: int = setting(10, checks.integer(2, 100_000), "an integer in [2, 100000]")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset == "mnist" and not self.data_dir:
            raise ConfigError(
                "data_dir", self.data_dir, "a directory holding MNIST IDX files when dataset=mnist"
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    name: str = setting("mlp", checks.one_of(MODELS), f"one of {', '.join(MODELS)}")
    hidden_units: int = setting(64, checks.integer(1, 100_000), "an integer in [1, 100000]")


@dataclasses.dataclass(frozen=True)
class TrainingConfig(Section):
    """How long the federation trains and how each client trains locally."""

    rounds: int = setting(10, checks.integer(1, 1000), "an integer in [1, 1000]")
    target_accuracy: float | None = setting(
        None,
        checks.optional(checks.number(0.0, 1.0, low_open=True)),
        "null or an accuracy in (0, 1]",
    )
    local_epochs: int = setting(5, checks.integer(1, 100), "an integer in [1, 100]")
    batch_size: int = setting(16, checks.integer(1, 65536), "an integer in [1, 65536]")
    learning_rate: float = setting(
        0.1, checks.number(0.0, 10.0, low_open=True), "a number in (0, 10]"
    )
    fedprox_mu: float = setting(
        0.0, checks.number(0.0, 100.0), "a number in [0, 100] (0 = plain FedAvg)"
    )
    dp_sgd_clip_norm: float | None = setting(
        None,
        checks.optional(checks.number(0.0, 1e6, low_open=True)),
        "null (no DP-SGD) or a per-example L2 clip norm in (0, 1e6]",
    )
    dp_sgd_noise_multiplier: float = setting(0.0, checks.number(0.0, 1e3), "a number in [0, 1000]")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dp_sgd_clip_norm is None and self.dp_sgd_noise_multiplier > 0:
            raise ConfigError(
                "dp_sgd_clip_norm",
                self.dp_sgd_clip_norm,
                "a clip norm > 0 when dp_sgd_noise_multiplier is set",
            )


@dataclasses.dataclass(frozen=True)
class SelectionConfig(Section):
    """Which clients take part in a round, how they are grouped into tasks and weighted."""

    cohort_size: int = setting(10, checks.integer(1), "an integer >= 1")
    clients_per_shard: int = setting(5, checks.integer(1), "an integer >= 1")
    policy: str = setting("uniform", checks.nonempty_str, "a selection policy name")
    power_of_choice_candidates: int = setting(
        20, checks.integer(1), "an integer >= 1 (capped at num_clients)"
    )
    oort_exploration: float = setting(
        0.2, checks.number(0.0, 1.0), "a fraction of the cohort in [0, 1]"
    )
    linucb_alpha: float = setting(0.5, checks.number(0.0, 100.0), "a number in [0, 100]")
    client_weighting: str = setting(
        "fedavg", checks.one_of(CLIENT_WEIGHTINGS), f"one of {', '.join(CLIENT_WEIGHTINGS)}"
    )
    max_client_weight: float = setting(
        1.0, checks.number(0.0, 1.0, low_open=True), "a share in (0, 1]"
    )
    probation_failures: int = setting(
        0, checks.integer(0, 1000), "an integer >= 0 (0 = no probation)"
    )
    probation_rounds: int = setting(2, checks.integer(1, 1000), "an integer in [1, 1000]")
    min_available: int = setting(0, checks.integer(0), "an integer >= 0 (0 = do not wait)")
    available_wait_s: float = setting(60.0, checks.number(0.0, 3600.0), "seconds in [0, 3600]")

    @property
    def shard_count(self) -> int:
        """How many local-train tasks a round fans out to."""
        return -(-self.cohort_size // self.clients_per_shard)


@dataclasses.dataclass(frozen=True)
class DpConfig(Section):
    """User-level DP-FedAvg (docs/privacy.md); on when clip_norm is set."""

    clip_norm: float | None = setting(
        None,
        checks.optional(checks.number(0.0, 1e6, low_open=True)),
        "null (no DP) or an L2 clip norm in (0, 1e6]",
    )
    noise_multiplier: float = setting(
        0.0, checks.number(0.0, 1e3), "a number in [0, 1000] (0 = clipping only)"
    )
    clipping: str = setting("fixed", checks.one_of(DP_CLIPPING), f"one of {', '.join(DP_CLIPPING)}")
    target_quantile: float = setting(0.5, checks.number(0.0, 1.0), "a quantile in [0, 1]")
    clip_learning_rate: float = setting(
        0.2, checks.number(0.0, 10.0, low_open=True), "a number in (0, 10]"
    )
    clip_count_stddev: float | None = setting(
        None,
        checks.optional(checks.number(0.0, 1e6, low_open=True)),
        "null (cohort_size / 20) or a number > 0",
    )
    delta: float = setting(
        1e-5, checks.number(0.0, 1.0, low_open=True, high_open=True), "a number in (0, 1)"
    )
    accountant: str = setting(
        "rdp", checks.one_of(DP_ACCOUNTANTS), f"one of {', '.join(DP_ACCOUNTANTS)}"
    )
    target_epsilon: float | None = setting(
        None, checks.optional(checks.number(0.0, 1e6, low_open=True)), "null or an epsilon > 0"
    )

    @property
    def enabled(self) -> bool:
        """User-level DP-FedAvg is on: client updates are clipped (and noised)."""
        return self.clip_norm is not None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.enabled and (self.target_epsilon is not None or self.noise_multiplier > 0):
            raise ConfigError(
                "clip_norm",
                self.clip_norm,
                "a clip norm > 0 when target_epsilon or noise_multiplier is set",
            )


@dataclasses.dataclass(frozen=True)
class SecureConfig(Section):
    """Secure aggregation (docs/secure_aggregation.md): the server sees only the sum."""

    mode: str = setting("off", checks.one_of(SECURE_MODES), f"one of {', '.join(SECURE_MODES)}")
    threshold: float = setting(
        0.6,
        checks.number(0.5, 1.0, low_open=True),
        "a fraction of each client's share holders in (0.5, 1]",
    )
    neighbours: int | None = setting(
        None,
        checks.optional(checks.integer(2, 100_000)),
        "null (2 ceil(log2 cohort_size)) or an integer >= 2",
    )
    clip: float = setting(1.0, checks.number(0.0, 1e6, low_open=True), "a number in (0, 1e6]")
    fractional_bits: int = setting(20, checks.integer(1, 40), "an integer in [1, 40]")
    max_examples: int = setting(4096, checks.integer(1, 2**31 - 1), "an integer in [1, 2^31 - 1]")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclasses.dataclass(frozen=True)
class ScreeningConfig(Section):
    """Norm screening of individual updates (docs/robustness.md)."""

    policy: str = setting(
        "off", checks.one_of(SCREENING_POLICIES), f"one of {', '.join(SCREENING_POLICIES)}"
    )
    threshold: float = setting(
        3.5, checks.number(0.0, 100.0, low_open=True), "a number in (0, 100]"
    )


@dataclasses.dataclass(frozen=True)
class CompressionConfig(Section):
    """What a client's update goes through before it is sent (docs/compression.md)."""

    kind: str = setting("none", checks.one_of(COMPRESSIONS), f"one of {', '.join(COMPRESSIONS)}")
    topk_fraction: float = setting(
        0.1, checks.number(0.0, 1.0, low_open=True), "a fraction of the coordinates in (0, 1]"
    )


@dataclasses.dataclass(frozen=True)
class AggregationConfig(Section):
    """The aggregation chain (fedpipe.aggregation.chain): rule, defences, privacy layers."""

    rule: str = setting("fedavg", checks.nonempty_str, "an aggregation rule name")
    quorum: float = setting(
        0.5, checks.number(0.0, 1.0, low_open=True), "a fraction of the cohort in (0, 1]"
    )
    byzantine_clients: int = setting(0, checks.integer(0), "an integer >= 0")
    trim_fraction: float = setting(
        0.1, checks.number(0.0, 0.5, high_open=True), "a fraction in [0, 0.5)"
    )
    multi_krum_m: int | None = setting(
        None, checks.optional(checks.integer(1)), "null (n - f) or an integer >= 1"
    )
    norm_bound: float = setting(1.0, checks.number(0.0, checks.INF, low_open=True), "a number > 0")
    layers: tuple[str, ...] = setting(
        (),
        lambda v: isinstance(v, list | tuple) and all(isinstance(e, str) and ":" in e for e in v),
        "a list of 'module:factory' paths of extra layers (factory(config) -> Layer)",
    )
    screening: ScreeningConfig = subsection(ScreeningConfig)
    compression: CompressionConfig = subsection(CompressionConfig)
    dp: DpConfig = subsection(DpConfig)
    secure: SecureConfig = subsection(SecureConfig)

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):  # from JSON or YAML; a config is hashable
            object.__setattr__(self, "layers", tuple(self.layers))
        super().__post_init__()


@dataclasses.dataclass(frozen=True)
class ServerOptimizerConfig(Section):
    """How the aggregated delta moves the global model (Reddi et al. 2021)."""

    name: str = setting(
        "fedavg", checks.one_of(SERVER_OPTIMIZERS), f"one of {', '.join(SERVER_OPTIMIZERS)}"
    )
    learning_rate: float = setting(
        1.0, checks.number(0.0, 100.0, low_open=True), "a number in (0, 100]"
    )
    momentum: float = setting(0.9, checks.number(0.0, 1.0, high_open=True), "a number in [0, 1)")
    beta1: float = setting(0.9, checks.number(0.0, 1.0, high_open=True), "a number in [0, 1)")
    beta2: float = setting(0.99, checks.number(0.0, 1.0, high_open=True), "a number in [0, 1)")
    tau: float = setting(1e-3, checks.number(0.0, 1.0, low_open=True), "a number in (0, 1]")


@dataclasses.dataclass(frozen=True)
class ClientSystemsConfig(Section):
    """Simulated heterogeneous clients: speed, crashes, availability, a round deadline."""

    speed_sigma: float = setting(
        0.0, checks.number(0.0, 5.0), "a number in [0, 5] (0 = equal speeds)"
    )
    failure_rate: float = setting(0.0, checks.number(0.0, 0.9), "a mean probability in [0, 0.9]")
    availability: float = setting(
        1.0, checks.number(0.0, 1.0, low_open=True), "a mean probability in (0, 1]"
    )
    round_deadline_s: float | None = setting(
        None,
        checks.optional(checks.number(0.0, checks.INF, low_open=True)),
        "null (no deadline) or a number of simulated seconds > 0",
    )


@dataclasses.dataclass(frozen=True)
class AttackConfig(Section):
    """Simulated hostile clients (docs/robustness.md)."""

    kind: str = setting("none", checks.one_of(ATTACKS), f"one of {', '.join(ATTACKS)}")
    fraction: float = setting(0.0, checks.number(0.0, 1.0), "a fraction of the clients in [0, 1]")
    scale: float = setting(10.0, checks.number(0.0, 1e6, low_open=True), "a number in (0, 1e6]")
    noise_std: float = setting(1.0, checks.number(0.0, 1e6, low_open=True), "a number in (0, 1e6]")


def _is_fault_schedule(v: Any) -> bool:
    if not isinstance(v, list | tuple) or not all(isinstance(e, str) for e in v):
        return False
    try:
        [ScheduledFault.parse(e) for e in v]
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class FaultsConfig(Section):
    """Injected infrastructure faults (docs/self_healing.md)."""

    task_crash_rate: float = setting(0.0, checks.number(0.0, 1.0), "a probability in [0, 1]")
    task_hang_rate: float = setting(0.0, checks.number(0.0, 1.0), "a probability in [0, 1]")
    artifact_corruption_rate: float = setting(
        0.0, checks.number(0.0, 1.0), "a probability in [0, 1]"
    )
    task_hang_s: float = setting(
        2.0, checks.number(0.0, 3600.0), "a number of seconds in [0, 3600]"
    )
    schedule: tuple[str, ...] = setting(
        (), _is_fault_schedule, "a list of kind@round[-round][:target] entries"
    )
    state_dir: str | None = setting(None, checks.optional_str, "a directory path or null")
    secagg_dropout: float = setting(
        0.0, checks.number(0.0, 1.0, high_open=True), "a fraction in [0, 1)"
    )

    def __post_init__(self) -> None:
        if isinstance(self.schedule, list):  # from JSON or YAML; a config is hashable
            object.__setattr__(self, "schedule", tuple(self.schedule))
        super().__post_init__()
        if self.task_crash_rate + self.task_hang_rate + self.artifact_corruption_rate > 1 + 1e-9:
            raise ConfigError(
                "task_crash_rate",
                self.task_crash_rate,
                "fault rates (task_crash_rate + task_hang_rate + artifact_corruption_rate) "
                "summing to <= 1",
            )


@dataclasses.dataclass(frozen=True)
class SimulationConfig(Section):
    """What only a simulation has: client systems, attacks, injected faults."""

    systems: ClientSystemsConfig = subsection(ClientSystemsConfig)
    attack: AttackConfig = subsection(AttackConfig)
    faults: FaultsConfig = subsection(FaultsConfig)


@dataclasses.dataclass(frozen=True)
class ClientsConfig(Section):
    """Where the clients run: simulated from a partition inside the pipeline's tasks, or
    agents at the data owners, reached through the coordinator (docs/deployment.md)."""

    runtime: str = setting(
        "simulated", checks.one_of(CLIENT_RUNTIMES), f"one of {', '.join(CLIENT_RUNTIMES)}"
    )
    coordinator: str | None = setting(
        None, checks.optional_str, "HOST:PORT of the coordinator, or null"
    )
    tls_dir: str | None = setting(
        None,
        checks.optional_str,
        "a folder with ca.pem, orchestrator.pem and orchestrator.key, or null",
    )
    task_timeout_s: float = setting(
        120.0, checks.number(0.0, 86400.0, low_open=True), "seconds in (0, 86400]"
    )
    state_dir: str | None = setting(
        None,
        checks.optional_str,
        "a directory path or null (simulate and run: <run folder>/clients)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.runtime == "agents" and not (self.coordinator and self.tls_dir):
            raise ConfigError(
                "coordinator",
                self.coordinator,
                "HOST:PORT of the coordinator, with clients.tls_dir, when clients.runtime=agents",
            )


@dataclasses.dataclass(frozen=True)
class PrivacyConfig(Section):
    """Where secrets come from (docs/privacy.md): the OS's cryptographic source, or, for
    research only, the run seed (no privacy guarantee; runs and versions are tagged)."""

    mode: str = setting(
        "secure",
        checks.one_of(PRIVACY_MODES),
        "secure (secrets from os.urandom) or reproducible-simulation (seeded secrets: "
        "no privacy guarantee, research only)",
    )


@dataclasses.dataclass(frozen=True)
class PipelineConfig(Section):
    """How the orchestrator runs the tasks of a round."""

    task_retries: int = setting(0, checks.integer(0, 10), "an integer in [0, 10]")
    retry_backoff_s: int = setting(
        1, checks.integer(0, 3600), "a whole number of seconds in [0, 3600]"
    )
    rounds_per_segment: int = setting(
        4, checks.integer(1, 1000), "an integer in [1, 1000] (rounds one pipeline run holds)"
    )


@dataclasses.dataclass(frozen=True)
class TrackingConfig(Section):
    """MLflow tracking and the Model Registry."""

    uri: str = setting(
        "sqlite:///runs/mlflow.db", checks.nonempty_str, "a non-empty MLflow tracking URI"
    )
    experiment: str = setting("fedpipe", checks.nonempty_str, "a non-empty experiment name")
    registered_model_name: str = setting(
        "fedpipe-digits", checks.nonempty_str, "a non-empty registered model name"
    )
    promotion_margin: float = setting(
        0.005, checks.number(0.0, 1.0), "an accuracy margin in [0, 1]"
    )
