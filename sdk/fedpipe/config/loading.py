"""Reading a config: YAML files and `--set name=value` overrides, by dotted field names.

Values are parsed as YAML 1.2 scalars, so the documented words mean what they say:
`off`, `on`, `yes` and `no` stay strings (YAML 1.1 would read `secure: off` as false).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fedpipe.config.errors import ConfigError
from fedpipe.config.run_config import RunConfig, _merge, _nest, from_mapping


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are only true/false (YAML 1.2 core schema)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_value(text: str) -> Any:
    """One scalar or list as a config file would hold it."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """`name=value` pairs (dotted names) as a mapping; `name=null` sets the field to null."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair, pair, "an override of the form section.field=value")
        values[key.strip()] = parse_value(raw)
    return values


def load(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or start from the defaults) and apply overrides on top."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.load(Path(path).read_text(), Loader=_Yaml12Loader) or {}  # noqa: S506
        if not isinstance(loaded, dict):
            raise ConfigError("<file>", str(path), "a YAML mapping of section: fields")
        values = _nest(loaded)
    return from_mapping(_merge(values, _nest(overrides or {})))


def resolve_local_paths(config: RunConfig, base: Path) -> RunConfig:
    """Make a sqlite tracking URI and data.data_dir absolute, so pipeline tasks that run in
    another working directory still find them."""
    changes: dict[str, Any] = {}
    uri = config.tracking.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        db = (base / uri.removeprefix("sqlite:///")).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        changes["tracking.uri"] = f"sqlite:///{db}"
    data_dir = config.data.data_dir
    if data_dir and "://" not in data_dir and not Path(data_dir).is_absolute():
        changes["data.data_dir"] = str((base / data_dir).resolve())
    tls_dir = config.clients.tls_dir
    if tls_dir and not Path(tls_dir).is_absolute():
        changes["clients.tls_dir"] = str((base / tls_dir).resolve())
    return config.replace(changes) if changes else config
