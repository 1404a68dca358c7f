"""The run config: every knob of a federated run, validated before anything runs.

A config comes from a YAML file, CLI overrides, or both; it travels to every pipeline
task as one JSON string so that each stage sees exactly the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fedpipe.aggregation import byzantine_tolerance

DATASETS = ("digits", "breast_cancer", "mnist")
PARTITIONERS = ("iid", "dirichlet", "shards", "quantity_skew")
MODELS = ("logistic_regression", "mlp", "cnn")
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")
SELECTION_POLICIES = ("uniform", "power_of_choice", "oort", "linucb")
AGGREGATORS = ("fedavg", "median", "trimmed_mean", "krum", "multi_krum", "norm_bounding")
DP_CLIPPING = ("fixed", "adaptive")
DP_ACCOUNTANTS = ("rdp", "pld")
# Selection policies under which every client is equally likely in every round,
# independently of its history: the sampled-Gaussian accounting assumes that.
DP_SAMPLING_POLICIES = ("uniform",)
CLIENT_WEIGHTINGS = ("fedavg", "adaptive")
SECURE_AGGREGATION = ("off", "secagg", "secagg+")
# Aggregators that must see each update on its own (robust statistics over clients): under
# secure aggregation the server only ever sees the sum, so they are refused.
NEEDS_INDIVIDUAL_UPDATES = frozenset({"median", "trimmed_mean", "krum", "multi_krum"})
SCREENING_POLICIES = ("off", "flag", "downweight", "exclude")
ATTACKS = ("none", "sign_flip", "scaling", "gaussian_noise", "label_flip")


class ConfigError(ValueError):
    """A config field holds a value that is not allowed."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"config field '{field}' = {value!r} is not allowed: {allowed}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of one federated run (see docs/config.md for each field)."""

    dataset: str = "digits"
    data_dir: str | None = None
    heldout_fraction: float = 0.2
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 0.5
    shards_per_client: int = 2
    quantity_skew_sigma: float = 1.0
    num_clients: int = 10
    cohort_size: int = 10
    clients_per_shard: int = 5
    selection_policy: str = "uniform"
    rounds: int = 10
    rounds_per_segment: int = 5  # rounds one pipeline run (a segment) holds
    local_epochs: int = 5
    batch_size: int = 16
    client_learning_rate: float = 0.1
    fedprox_mu: float = 0.0
    model: str = "mlp"
    hidden_units: int = 64
    aggregator: str = "fedavg"
    server_optimizer: str = "fedavg"
    server_learning_rate: float = 1.0
    server_momentum: float = 0.9
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_tau: float = 1e-3
    quorum: float = 0.5
    seed: int = 0
    target_accuracy: float | None = None
    mlflow_tracking_uri: str = "sqlite:///runs/mlflow.db"
    mlflow_experiment: str = "fedpipe"
    registered_model_name: str = "fedpipe-digits"
    promotion_margin: float = 0.005
    dp_clip_norm: float | None = None
    dp_noise_multiplier: float = 0.0
    dp_clipping: str = "fixed"
    dp_target_quantile: float = 0.5
    dp_clip_learning_rate: float = 0.2
    dp_clip_count_stddev: float | None = None
    dp_delta: float = 1e-5
    dp_accountant: str = "rdp"
    target_epsilon: float | None = None
    local_dp_clip_norm: float | None = None
    local_dp_noise_multiplier: float = 0.0
    power_of_choice_candidates: int = 20
    oort_exploration: float = 0.2
    linucb_alpha: float = 0.5
    client_weighting: str = "fedavg"
    max_client_weight: float = 1.0
    client_speed_sigma: float = 0.0
    client_failure_rate: float = 0.0
    client_availability: float = 1.0
    round_deadline_s: float | None = None
    secure_aggregation: str = "off"
    secagg_threshold: float = 0.6
    secagg_neighbours: int | None = None
    secagg_clip: float = 1.0
    secagg_fractional_bits: int = 20
    secagg_max_examples: int = 4096
    secagg_simulated_dropout: float = 0.0
    byzantine_clients: int = 0
    trim_fraction: float = 0.1
    multi_krum_m: int | None = None
    norm_bound: float = 1.0
    screening: str = "off"
    screening_threshold: float = 3.5
    attack: str = "none"
    attack_fraction: float = 0.0
    attack_scale: float = 10.0
    attack_noise_std: float = 1.0
    task_retries: int = 0
    retry_backoff_s: int = 1
    task_crash_rate: float = 0.0
    task_hang_rate: float = 0.0
    artifact_corruption_rate: float = 0.0
    task_hang_s: float = 2.0
    fault_schedule: tuple[str, ...] = ()
    fault_state_dir: str | None = None
    probation_failures: int = 0
    probation_rounds: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.fault_schedule, list):  # from JSON or YAML; a config is hashable
            object.__setattr__(self, "fault_schedule", tuple(self.fault_schedule))
        if self.secure_aggregation != "off" and self.aggregator in NEEDS_INDIVIDUAL_UPDATES:
            raise ConfigError(
                "aggregator",
                self.aggregator,
                f"an aggregator of the sum (fedavg) when secure_aggregation="
                f"{self.secure_aggregation}: {self.aggregator} needs individual updates, "
                "which secure aggregation hides from the server",
            )
        for name, (check, allowed) in _RULES.items():
            value = getattr(self, name)
            if not check(value):
                raise ConfigError(name, value, allowed)
        if self.cohort_size > self.num_clients:
            raise ConfigError(
                "cohort_size", self.cohort_size, f"at most num_clients ({self.num_clients})"
            )
        if self.secure_aggregation != "off":
            from fedpipe.secagg.quantization import FixedPoint

            encoding = FixedPoint(
                self.secagg_clip,
                self.secagg_fractional_bits,
                self.secagg_max_examples,
                self.cohort_size,
            )
            if encoding.bits > 64:
                raise ConfigError(
                    "secagg_fractional_bits",
                    self.secagg_fractional_bits,
                    f"few enough bits that the cohort's sum fits 64 (it needs {encoding.bits}); "
                    "lower secagg_fractional_bits, secagg_clip or secagg_max_examples",
                )
            if self.screening != "off":
                raise ConfigError(
                    "screening",
                    self.screening,
                    "off when secure_aggregation is on: screening needs each update's norm, "
                    "which secure aggregation hides from the server",
                )
            if self.dp_enabled and self.dp_clipping == "adaptive":
                raise ConfigError(
                    "dp_clipping",
                    self.dp_clipping,
                    "fixed when secure_aggregation is on: adaptive clipping needs the count "
                    "of unclipped updates, which is not securely summed yet",
                )
        if self.client_weighting != "fedavg" and self.aggregator != "fedavg":
            raise ConfigError(
                "client_weighting",
                self.client_weighting,
                f"fedavg with aggregator={self.aggregator}: adaptive weights replace FedAvg's "
                "example weights, and robust aggregators weigh clients their own way",
            )
        if self.dataset == "mnist" and not self.data_dir:
            raise ConfigError(
                "data_dir", self.data_dir, "a directory holding MNIST IDX files when dataset=mnist"
            )
        broken = byzantine_tolerance.violation(
            self.aggregator,
            self.cohort_size,
            self.byzantine_clients,
            trim_fraction=self.trim_fraction,
            multi_krum_m=self.multi_krum_m,
        )
        if broken:
            raise ConfigError("byzantine_clients", self.byzantine_clients, broken)
        if self.dp_enabled:
            from fedpipe.privacy import accounting as privacy_accounting

            privacy_accounting.check_config(self)
        elif self.target_epsilon is not None or self.dp_noise_multiplier > 0:
            raise ConfigError(
                "dp_clip_norm",
                self.dp_clip_norm,
                "a clip norm > 0 when target_epsilon or dp_noise_multiplier is set",
            )
        fault_rates = self.task_crash_rate + self.task_hang_rate + self.artifact_corruption_rate
        if fault_rates > 1 + 1e-9:
            raise ConfigError(
                "task_crash_rate",
                self.task_crash_rate,
                "fault rates (task_crash_rate + task_hang_rate + artifact_corruption_rate) "
                "summing to <= 1",
            )
        if self.local_dp_clip_norm is None and self.local_dp_noise_multiplier > 0:
            raise ConfigError(
                "local_dp_clip_norm",
                self.local_dp_clip_norm,
                "a clip norm > 0 when local_dp_noise_multiplier is set",
            )

    @property
    def dp_enabled(self) -> bool:
        """User-level DP-FedAvg is on: client updates are clipped (and noised)."""
        return self.dp_clip_norm is not None

    @property
    def shard_count(self) -> int:
        """How many local-train tasks a round fans out to."""
        return -(-self.cohort_size // self.clients_per_shard)

    @property
    def min_valid_updates(self) -> int:
        """The quorum as a number of clients: at least one, at most the cohort."""
        return max(1, math.ceil(self.quorum * self.cohort_size - 1e-9))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def replace(self, **changes: Any) -> RunConfig:
        return from_mapping({**dataclasses.asdict(self), **changes})


def _is_int(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    )


def _is_float(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return check


def _one_of(options: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda v: v in options


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _is_fault_schedule(v: Any) -> bool:
    from fedpipe.simulation.faults import ScheduledFault

    if not isinstance(v, list | tuple) or not all(isinstance(e, str) for e in v):
        return False
    try:
        [ScheduledFault.parse(e) for e in v]
    except ValueError:
        return False
    return True


_INF = float("inf")
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dataset": (_one_of(DATASETS), f"one of {', '.join(DATASETS)}"),
    "data_dir": (lambda v: v is None or isinstance(v, str), "a directory path or null"),
    "heldout_fraction": (_is_float(0.0, 0.9, low_open=True), "a number in (0, 0.9]"),
    "partitioner": (_one_of(PARTITIONERS), f"one of {', '.join(PARTITIONERS)}"),
    "dirichlet_alpha": (_is_float(0.0, _INF, low_open=True), "a number > 0"),
    "shards_per_client": (_is_int(1), "an integer >= 1"),
    "quantity_skew_sigma": (_is_float(0.0, 10.0), "a number in [0, 10]"),
    "num_clients": (_is_int(2, 100_000), "an integer in [2, 100000]"),
    "cohort_size": (_is_int(1), "an integer >= 1"),
    "clients_per_shard": (_is_int(1), "an integer >= 1"),
    "selection_policy": (_one_of(SELECTION_POLICIES), f"one of {', '.join(SELECTION_POLICIES)}"),
    "rounds": (_is_int(1, 1000), "an integer in [1, 1000]"),
    "rounds_per_segment": (_is_int(1, 1000), "an integer in [1, 1000]"),
    "local_epochs": (_is_int(1, 100), "an integer in [1, 100]"),
    "batch_size": (_is_int(1, 65536), "an integer in [1, 65536]"),
    "client_learning_rate": (_is_float(0.0, 10.0, low_open=True), "a number in (0, 10]"),
    "fedprox_mu": (_is_float(0.0, 100.0), "a number in [0, 100] (0 = plain FedAvg)"),
    "model": (_one_of(MODELS), f"one of {', '.join(MODELS)}"),
    "hidden_units": (_is_int(1, 100_000), "an integer in [1, 100000]"),
    "aggregator": (_one_of(AGGREGATORS), f"one of {', '.join(AGGREGATORS)}"),
    "server_optimizer": (_one_of(SERVER_OPTIMIZERS), f"one of {', '.join(SERVER_OPTIMIZERS)}"),
    "server_learning_rate": (_is_float(0.0, 100.0, low_open=True), "a number in (0, 100]"),
    "server_momentum": (_is_float(0.0, 1.0, high_open=True), "a number in [0, 1)"),
    "server_beta1": (_is_float(0.0, 1.0, high_open=True), "a number in [0, 1)"),
    "server_beta2": (_is_float(0.0, 1.0, high_open=True), "a number in [0, 1)"),
    "server_tau": (_is_float(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    "quorum": (_is_float(0.0, 1.0, low_open=True), "a fraction of the cohort in (0, 1]"),
    "seed": (_is_int(0, 2**31 - 1), "an integer in [0, 2^31 - 1]"),
    "target_accuracy": (
        lambda v: v is None or _is_float(0.0, 1.0, low_open=True)(v),
        "null or an accuracy in (0, 1]",
    ),
    "mlflow_tracking_uri": (_nonempty_str, "a non-empty MLflow tracking URI"),
    "mlflow_experiment": (_nonempty_str, "a non-empty experiment name"),
    "registered_model_name": (_nonempty_str, "a non-empty registered model name"),
    "promotion_margin": (_is_float(0.0, 1.0), "an accuracy margin in [0, 1]"),
    "dp_clip_norm": (
        lambda v: v is None or _is_float(0.0, 1e6, low_open=True)(v),
        "null (no DP) or an L2 clip norm in (0, 1e6]",
    ),
    "dp_noise_multiplier": (_is_float(0.0, 1e3), "a number in [0, 1000] (0 = clipping only)"),
    "dp_clipping": (_one_of(DP_CLIPPING), f"one of {', '.join(DP_CLIPPING)}"),
    "dp_target_quantile": (_is_float(0.0, 1.0), "a quantile in [0, 1]"),
    "dp_clip_learning_rate": (_is_float(0.0, 10.0, low_open=True), "a number in (0, 10]"),
    "dp_clip_count_stddev": (
        lambda v: v is None or _is_float(0.0, 1e6, low_open=True)(v),
        "null (cohort_size / 20) or a number > 0",
    ),
    "dp_delta": (_is_float(0.0, 1.0, low_open=True, high_open=True), "a number in (0, 1)"),
    "dp_accountant": (_one_of(DP_ACCOUNTANTS), f"one of {', '.join(DP_ACCOUNTANTS)}"),
    "target_epsilon": (
        lambda v: v is None or _is_float(0.0, 1e6, low_open=True)(v),
        "null or an epsilon > 0",
    ),
    "local_dp_clip_norm": (
        lambda v: v is None or _is_float(0.0, 1e6, low_open=True)(v),
        "null (no DP-SGD) or a per-example L2 clip norm in (0, 1e6]",
    ),
    "local_dp_noise_multiplier": (_is_float(0.0, 1e3), "a number in [0, 1000]"),
    "power_of_choice_candidates": (_is_int(1), "an integer >= 1 (capped at num_clients)"),
    "oort_exploration": (_is_float(0.0, 1.0), "a fraction of the cohort in [0, 1]"),
    "linucb_alpha": (_is_float(0.0, 100.0), "a number in [0, 100]"),
    "client_weighting": (_one_of(CLIENT_WEIGHTINGS), f"one of {', '.join(CLIENT_WEIGHTINGS)}"),
    "max_client_weight": (_is_float(0.0, 1.0, low_open=True), "a share in (0, 1]"),
    "client_speed_sigma": (_is_float(0.0, 5.0), "a number in [0, 5] (0 = equal speeds)"),
    "client_failure_rate": (_is_float(0.0, 0.9), "a mean probability in [0, 0.9]"),
    "client_availability": (_is_float(0.0, 1.0, low_open=True), "a mean probability in (0, 1]"),
    "round_deadline_s": (
        lambda v: v is None or _is_float(0.0, _INF, low_open=True)(v),
        "null (no deadline) or a number of simulated seconds > 0",
    ),
    "secure_aggregation": (_one_of(SECURE_AGGREGATION), f"one of {', '.join(SECURE_AGGREGATION)}"),
    "secagg_threshold": (
        _is_float(0.5, 1.0, low_open=True),
        "a fraction of each client's share holders in (0.5, 1]",
    ),
    "secagg_neighbours": (
        lambda v: v is None or _is_int(2, 100_000)(v),
        "null (2 ceil(log2 cohort_size)) or an integer >= 2",
    ),
    "secagg_clip": (_is_float(0.0, 1e6, low_open=True), "a number in (0, 1e6]"),
    "secagg_fractional_bits": (_is_int(1, 40), "an integer in [1, 40]"),
    "secagg_max_examples": (_is_int(1, 2**31 - 1), "an integer in [1, 2^31 - 1]"),
    "secagg_simulated_dropout": (_is_float(0.0, 1.0, high_open=True), "a fraction in [0, 1)"),
    "byzantine_clients": (_is_int(0), "an integer >= 0"),
    "trim_fraction": (_is_float(0.0, 0.5, high_open=True), "a fraction in [0, 0.5)"),
    "multi_krum_m": (lambda v: v is None or _is_int(1)(v), "null (n - f) or an integer >= 1"),
    "norm_bound": (_is_float(0.0, _INF, low_open=True), "a number > 0"),
    "screening": (_one_of(SCREENING_POLICIES), f"one of {', '.join(SCREENING_POLICIES)}"),
    "screening_threshold": (_is_float(0.0, 100.0, low_open=True), "a number in (0, 100]"),
    "attack": (_one_of(ATTACKS), f"one of {', '.join(ATTACKS)}"),
    "attack_fraction": (_is_float(0.0, 1.0), "a fraction of the clients in [0, 1]"),
    "attack_scale": (_is_float(0.0, 1e6, low_open=True), "a number in (0, 1e6]"),
    "attack_noise_std": (_is_float(0.0, 1e6, low_open=True), "a number in (0, 1e6]"),
    "task_retries": (_is_int(0, 10), "an integer in [0, 10]"),
    "retry_backoff_s": (_is_int(0, 3600), "a whole number of seconds in [0, 3600]"),
    "task_crash_rate": (_is_float(0.0, 1.0), "a probability in [0, 1]"),
    "task_hang_rate": (_is_float(0.0, 1.0), "a probability in [0, 1]"),
    "artifact_corruption_rate": (_is_float(0.0, 1.0), "a probability in [0, 1]"),
    "task_hang_s": (_is_float(0.0, 3600.0), "a number of seconds in [0, 3600]"),
    "fault_schedule": (_is_fault_schedule, "a list of kind@round[-round][:target] entries"),
    "fault_state_dir": (lambda v: v is None or _nonempty_str(v), "a directory path or null"),
    "probation_failures": (_is_int(0, 1000), "an integer >= 0 (0 = no probation)"),
    "probation_rounds": (_is_int(1, 1000), "an integer in [1, 1000]"),
}

FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def from_mapping(values: Mapping[str, Any]) -> RunConfig:
    """Build a config from a mapping, refusing unknown fields by name."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(unknown[0], values[unknown[0]], f"a known field ({', '.join(FIELDS)})")
    return RunConfig(**values)


def from_json(text: str) -> RunConfig:
    return from_mapping(json.loads(text))


def load(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or start from the defaults) and apply overrides on top; an
    override of None sets the field to null (e.g. no target accuracy)."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError("<file>", str(path), "a YAML mapping of field: value")
        values.update(loaded)
    values.update(overrides or {})
    return from_mapping(values)


def resolve_local_paths(config: RunConfig, base: Path) -> RunConfig:
    """Make a sqlite tracking URI and data_dir absolute, so pipeline tasks that run in
    another working directory still find them."""
    changes: dict[str, Any] = {}
    uri = config.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        db = (base / uri.removeprefix("sqlite:///")).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        changes["mlflow_tracking_uri"] = f"sqlite:///{db}"
    if config.data_dir and not Path(config.data_dir).is_absolute():
        changes["data_dir"] = str((base / config.data_dir).resolve())
    return config.replace(**changes) if changes else config
