"""The run config: every setting of a federated run, in sections, validated when built.

It travels to every pipeline task as one JSON string (nested by section), so each stage
sees exactly the same settings. Fields are addressed by dotted names everywhere a person
writes them (YAML files, `--set aggregation.dp.noise_multiplier=1.0`, MLflow params).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any, get_type_hints

from fedpipe.config import checks
from fedpipe.config.errors import ConfigError
from fedpipe.config.renamed import RENAMED
from fedpipe.config.sections import (
    AggregationConfig,
    ClientsConfig,
    DataConfig,
    ModelConfig,
    PipelineConfig,
    PrivacyConfig,
    Section,
    SelectionConfig,
    ServerOptimizerConfig,
    SimulationConfig,
    TrackingConfig,
    TrainingConfig,
    setting,
    subsection,
)


@dataclasses.dataclass(frozen=True)
class RunConfig(Section):
    """Settings of one federated run (docs/config.md lists every field)."""

    seed: int = setting(0, checks.integer(0, 2**31 - 1), "an integer in [0, 2^31 - 1]")
    data: DataConfig = subsection(DataConfig)
    model: ModelConfig = subsection(ModelConfig)
    training: TrainingConfig = subsection(TrainingConfig)
    selection: SelectionConfig = subsection(SelectionConfig)
    aggregation: AggregationConfig = subsection(AggregationConfig)
    server: ServerOptimizerConfig = subsection(ServerOptimizerConfig)
    simulation: SimulationConfig = subsection(SimulationConfig)
    clients: ClientsConfig = subsection(ClientsConfig)
    privacy: PrivacyConfig = subsection(PrivacyConfig)
    pipeline: PipelineConfig = subsection(PipelineConfig)
    tracking: TrackingConfig = subsection(TrackingConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection.cohort_size > self.data.num_clients:
            raise ConfigError(
                "selection.cohort_size",
                self.selection.cohort_size,
                f"at most data.num_clients ({self.data.num_clients})",
            )

    @property
    def dp_enabled(self) -> bool:
        return self.aggregation.dp.enabled

    @property
    def secure_enabled(self) -> bool:
        return self.aggregation.secure.enabled

    @property
    def shard_count(self) -> int:
        return self.selection.shard_count

    @property
    def min_valid_updates(self) -> int:
        """The quorum as a number of clients: at least one, at most the cohort."""
        return max(1, math.ceil(self.aggregation.quorum * self.selection.cohort_size - 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every leaf field as (dotted name, value), e.g. for MLflow params."""
        yield from _leaves(self.to_dict(), "")

    def get(self, name: str) -> Any:
        value: Any = self
        for part in name.split("."):
            value = getattr(value, part)
        return value

    def replace(self, changes: Mapping[str, Any]) -> RunConfig:
        """A copy with some fields changed, by dotted name ({"training.rounds": 3})."""
        return from_mapping(_merge(self.to_dict(), _nest(changes)))


def _leaves(tree: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys ({"aggregation.dp.delta": 1e-5}) as nested mappings; nested stay nested."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(str(key), value, "a field name (a string)")
        *parents, leaf = key.split(".")
        node = nested
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(parents[: i + 1]), child, "a section (a mapping)")
            node = child
        if isinstance(value, Mapping):
            value = _nest(value)
            if isinstance(node.get(leaf), dict):
                value = _merge(node[leaf], value)
        node[leaf] = value
    return nested


def _merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """A section from a nested mapping; an unknown, renamed or bad field is named in full."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in fields:
            if not prefix and key in RENAMED:
                raise ConfigError(key, value, f"a current field name: it is now {RENAMED[key]}")
            known = ", ".join(f"{prefix}{name}" for name in fields)
            raise ConfigError(path, value, f"a known field ({known})")
        hint = hints[key]
        if isinstance(hint, type) and issubclass(hint, Section):
            if not isinstance(value, Mapping):
                raise ConfigError(path, value, f"a mapping of the {path} section's fields")
            value = _build(hint, value, f"{path}.")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if e.field.startswith(prefix) and prefix:
            raise
        raise ConfigError(f"{prefix}{e.field}", e.value, e.allowed) from None


def from_mapping(values: Mapping[str, Any]) -> RunConfig:
    """Build a config from nested sections and/or dotted names."""
    return _build(RunConfig, _nest(values), "")


def from_json(text: str) -> RunConfig:
    return from_mapping(json.loads(text))
