"""Aggregation as a chain of layers, composed from the config by one builder.

In the spirit of TFF's aggregation factories and Flower's strategy wrappers: each layer
may have a **client part** (run by the client before its update leaves it, i.e. before
masking under secure aggregation: clip, noise share, compression), **server parts** (on
the individual updates when the server can see them: validate, screen, clip; on the
aggregate: central noise, rescaling) and its own **state** (kept in the global model
artifact) and **report** (metrics that reach the round report, MLflow and KFP alike).

A round's server side runs, in order: every layer's `on_updates` (individual updates;
skipped under secure aggregation, where the server only holds masked inputs), the
chain's one **combiner** (a mean of weighted updates, or a robust rule over individual
updates), every layer's `on_aggregate`, then the server optimizer. A layer that needs
individual updates cannot sit below secure aggregation: `build_chain` refuses the
composition, naming the layers. `build_chain` is the one place that reads the config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedpipe.aggregation import (
    byzantine_tolerance,
    compression,
    mean,
    robust,
    screening,
    server_optimizers,
    validation,
)
from fedpipe.aggregation.layer import (
    Aggregate,
    ClientContext,
    Combiner,
    Layer,
    RoundContext,
    Screened,
    ServerStep,
    State,
    Weighting,
)
from fedpipe.artifacts.updates import ClientUpdate
from fedpipe.config.errors import ConfigError
from fedpipe.privacy import dp_fedavg
from fedpipe.secagg.encoding import encoding_for

if TYPE_CHECKING:
    from fedpipe.config import RunConfig


class AggregationChain:
    """The composed layers of a run; see the module docstring for the order of the parts."""

    def __init__(
        self,
        layers: Sequence[Layer],
        weighting: Weighting,
        combiner: Combiner,
        server_step: ServerStep,
        secure: bool,
    ) -> None:
        self.layers, self.weighting, self.combiner = list(layers), weighting, combiner
        self.server_step, self.secure = server_step, secure

    @property
    def all_layers(self) -> list[Layer]:
        return [*self.layers, self.weighting, self.combiner, self.server_step]

    @property
    def streams(self) -> bool:
        """Every part looks at one update at a time, so a round can be summed one shard at
        a time in O(model) memory (fedpipe.aggregation.streaming)."""
        parts = [*self.layers, self.weighting, self.combiner]
        return not self.secure and all(layer.streamable for layer in parts)

    def describe(self) -> str:
        """The chain in words, e.g. for the model card: 'validate -> dp -> mean -> fedavg'."""
        return " -> ".join(layer.name for layer in self.all_layers)

    def initial_state(self, size: int) -> State:
        state: State = {}
        for layer in self.all_layers:
            state.update(layer.initial_state(size))
        return state

    def client_update(self, delta: np.ndarray, ctx: ClientContext) -> tuple[np.ndarray, float]:
        """The client part: the transformed update and the client's weight in the sum."""
        for layer in self.layers:
            delta = layer.client(delta, ctx)
        return delta, self.weighting.client_weight(ctx)

    def screen(self, updates: list[ClientUpdate], rnd: RoundContext) -> Screened:
        """The server parts on individual updates (the plain path only)."""
        result = Screened(list(updates))
        for layer in self.layers:
            screened = layer.on_updates(result.kept, rnd)
            result = Screened(
                screened.kept, result.rejected + screened.rejected, result.flags + screened.flags
            )
        return result

    def combine(self, updates: list[ClientUpdate], rnd: RoundContext) -> Aggregate:
        return self.combiner.combine(updates, self.weighting, rnd)

    def aggregate_plain(
        self, updates: list[ClientUpdate], rnd: RoundContext, weights: np.ndarray
    ) -> tuple[np.ndarray, State, np.ndarray, dict[str, float]]:
        """The whole plain-path server side on individual updates (no quorum rule): what
        the aggregate stage does between reading and writing, for benchmarks and tests."""
        screened = self.screen(updates, rnd)
        return self.finish(self.combine(screened.kept, rnd), rnd, weights)

    def finish(
        self, aggregate: Aggregate, rnd: RoundContext, weights: np.ndarray
    ) -> tuple[np.ndarray, State, np.ndarray, dict[str, float]]:
        """The server parts on the aggregate, then the server step: new weights and state,
        the delta applied, and every layer's report."""
        aggregate.divisor = self.weighting.divisor(aggregate, rnd)
        for layer in self.layers:
            aggregate = layer.on_aggregate(aggregate, rnd)
        delta = aggregate.delta
        new_weights, state = self.server_step.apply(weights, delta, rnd.state)
        metrics: dict[str, float] = {}
        for layer in self.all_layers:
            state.update(layer.next_state(rnd))
            metrics.update(layer.report())
        return new_weights, state, delta, metrics


LayerFactory = Callable[["RunConfig"], Layer]


def _import(path: str) -> LayerFactory:
    module, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(
            "aggregation.layers", path, f"an importable 'module:factory' of a layer ({e})"
        ) from None


def build_chain(config: RunConfig) -> AggregationChain:
    """The chain the config describes; refuses (ConfigError) a composition that cannot work."""
    agg = config.aggregation
    secure = agg.secure.enabled
    rule = agg.rule
    if rule not in COMBINERS:
        raise ConfigError("aggregation.rule", rule, f"one of {', '.join(COMBINERS)}")
    broken = byzantine_tolerance.violation(
        rule,
        config.selection.cohort_size,
        agg.byzantine_clients,
        trim_fraction=agg.trim_fraction,
        multi_krum_m=agg.multi_krum_m,
    )
    if broken:
        raise ConfigError("aggregation.byzantine_clients", agg.byzantine_clients, broken)
    layers: list[Layer] = []
    if not secure:
        layers.append(validation.UpdateValidation())
    if agg.screening.policy != "off":
        layers.append(screening.NormScreening(agg.screening.policy, agg.screening.threshold))
    if rule == "norm_bounding":
        layers.append(robust.NormBounding(agg.norm_bound))
    if agg.compression.kind != "none":
        if secure:
            why = (
                "masks make every coordinate non-zero, so top-k's sparsity cannot survive masking"
                if agg.compression.kind == "topk"
                else "masked words are sent at the fixed-point width, so quantizing first would "
                "cost accuracy and save no bytes (packing quantized words in the masking ring, "
                "compression.pack_words, is not wired into the protocol yet)"
            )
            raise ConfigError(
                "aggregation.compression.kind",
                agg.compression.kind,
                f"none under secure aggregation: {why}",
            )
        layers.append(compression.Compression(agg.compression.kind, agg.compression.topk_fraction))
    layers += [_import(path)(config) for path in agg.layers]
    weighting: Weighting
    if config.dp_enabled:
        dp = dp_fedavg.DpFedAvg.from_config(config)
        layers.append(dp)
        weighting = dp
        for name, value, allowed in (
            ("aggregation.rule", rule, ("fedavg",)),
            ("selection.client_weighting", config.selection.client_weighting, ("fedavg",)),
        ):
            if value not in allowed:
                raise ConfigError(
                    name,
                    value,
                    f"{allowed[0]} when DP is on: DP-FedAvg weights clipped updates equally "
                    "and calibrates its noise to a clipped sum",
                )
    elif config.selection.client_weighting == "adaptive":
        if rule != "fedavg":
            raise ConfigError(
                "selection.client_weighting",
                config.selection.client_weighting,
                f"fedavg with aggregation.rule={rule}: adaptive weights replace FedAvg's "
                "example weights, and robust rules weigh clients their own way",
            )
        weighting = mean.AnnouncedWeighting(config.selection.max_client_weight)
    else:
        weighting = mean.ExampleWeighting()
    combiner = COMBINERS[rule](config)
    chain = AggregationChain(
        layers, weighting, combiner, server_optimizers.ServerOptimizer(config.server), secure
    )
    if secure:
        _check_secure_composition(config, chain)
    return chain


def _check_secure_composition(config: RunConfig, chain: AggregationChain) -> None:
    blocked = [layer.name for layer in chain.all_layers if layer.needs_individual_updates]
    if blocked:
        field = (
            "aggregation.rule" if chain.combiner.needs_individual_updates else "aggregation.layers"
        )
        value = config.aggregation.rule if field == "aggregation.rule" else blocked
        raise ConfigError(
            field,
            value,
            f"layers that work on the sum when aggregation.secure.mode="
            f"{config.aggregation.secure.mode}: {', '.join(blocked)} needs individual "
            "updates, which secure aggregation hides from the server",
        )
    if config.dp_enabled and config.aggregation.dp.clipping == "adaptive":
        raise ConfigError(
            "aggregation.dp.clipping",
            "adaptive",
            "fixed under secure aggregation: adaptive clipping needs the count of unclipped "
            "updates, which is not securely summed",
        )
    secure = config.aggregation.secure
    # Under DP the cohort is Poisson-sampled: up to num_clients may be summed.
    summands = config.data.num_clients if config.dp_enabled else config.selection.cohort_size
    encoding = encoding_for(config, summands)
    if encoding.bits > 64:
        raise ConfigError(
            "aggregation.secure.fractional_bits",
            secure.fractional_bits,
            f"few enough bits that the cohort's sum fits 64 (it needs {encoding.bits}); "
            "lower fractional_bits, clip or max_examples",
        )


COMBINERS: dict[str, Callable[[RunConfig], Combiner]] = {
    "fedavg": lambda config: mean.Mean(),
    "norm_bounding": lambda config: mean.Mean(),
    **robust.RULES,
}
"""The aggregation rules by name: the one list of their names."""
