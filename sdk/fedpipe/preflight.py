"""Everything a run refuses before it starts. Each config section validates its own fields
when built (fedpipe.config); here the checks that need the registries: the aggregation
chain's composition (its builder is the one place that judges it) and the selection
policy's name, and whether it can see what it ranks by."""

from __future__ import annotations

from fedpipe.aggregation.chain import build_chain
from fedpipe.clients import selection
from fedpipe.config import ConfigError, RunConfig


def check(config: RunConfig) -> RunConfig:
    """The config, if a run can start from it; ConfigError naming the field otherwise."""
    policy = config.selection.policy
    if policy not in selection.POLICIES:
        raise ConfigError("selection.policy", policy, f"one of {', '.join(selection.POLICIES)}")
    if config.secure_enabled and policy in selection.RANKED_BY_CLIENT_LOSS:
        allowed = [p for p in selection.POLICIES if p not in selection.RANKED_BY_CLIENT_LOSS]
        raise ConfigError(
            "selection.policy",
            policy,
            f"one of {', '.join(allowed)} under secure aggregation: {policy} ranks clients "
            "by their last training loss, which a client sends only inside its masked vector",
        )
    build_chain(config)
    return config
