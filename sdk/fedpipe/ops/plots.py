"""Plots of a run that people would rather look at than tables, logged to MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fedpipe.artifacts.client_registry import ClientRegistry


def accuracy_per_round(history: list[tuple[int, float]], target: float | None) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    rounds, accuracy = zip(*sorted(history), strict=True) if history else ((), ())
    ax.plot(rounds, accuracy, marker="o")
    if target is not None:
        ax.axhline(target, linestyle="--", color="gray", label=f"target {target:.2f}")
        ax.legend(loc="lower right")
    ax.set(xlabel="round (0 = initial model)", ylabel="held-out accuracy", ylim=(0, 1))
    ax.grid(alpha=0.3)
    return fig


def client_participation(registry: ClientRegistry) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ids = [c.client_id for c in registry.clients]
    trained = [c.participation for c in registry.clients]
    ax.bar(ids, trained, label="rounds trained")
    ax.bar(ids, [c.failures for c in registry.clients], bottom=trained, label="failed / rejected")
    ax.set(xlabel="client", ylabel="rounds")
    fig.legend(loc="outside upper center", ncols=2)
    return fig
