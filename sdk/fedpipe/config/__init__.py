"""The run config in sections (data, model, training, selection, aggregation{dp, secure,
screening}, server, simulation{systems, attack, faults}, clients, pipeline, tracking)."""

from fedpipe.config.errors import ConfigError
from fedpipe.config.loading import load, parse_overrides, parse_value, resolve_local_paths
from fedpipe.config.run_config import RunConfig, from_json, from_mapping

__all__ = [
    "ConfigError",
    "RunConfig",
    "from_json",
    "from_mapping",
    "load",
    "parse_overrides",
    "parse_value",
    "resolve_local_paths",
]
