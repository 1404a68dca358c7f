"""Heterogeneous clients: each simulated client's system profile and what happens to it in
a round (it is offline, it crashes, it misses the deadline, or it reports in time).

Real deployments have slow, flaky and intermittently available clients; selection
policies are only worth comparing on such clients, and on simulated wall-clock time,
not only on rounds. Profiles and round fates are pure functions of the run seed, the
round number and the client id, so every stage (local train, evaluate) and every
process computes the same ones without passing them around.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedpipe.config import RunConfig

NOMINAL_EXAMPLES_PER_S = 100.0  # local training throughput of a client of speed 1
_PROFILE_TAG = 0x5157E4
_ROUND_TAG = 0xF47E
_CONCENTRATION = 2.0  # Beta concentration: small, so some clients are far worse than others

OK, UNAVAILABLE, FAILED, TIMEOUT = "ok", "unavailable", "failed", "timeout"


@dataclasses.dataclass(frozen=True)
class SystemProfile:
    speed: float  # relative throughput; log-normal with median 1
    failure_probability: float  # chance of crashing during a round it takes part in
    availability: float  # chance of being online when selected


@dataclasses.dataclass(frozen=True)
class ClientRound:
    client_id: int
    fate: str  # ok, unavailable, failed or timeout
    duration_s: float  # simulated time the client would need to train and report


def heterogeneous(config: RunConfig) -> bool:
    """Whether the config simulates client systems at all (speed spread, failures,
    availability or a deadline); otherwise simulated time is only nominal."""
    return (
        config.simulation.systems.speed_sigma > 0
        or config.simulation.systems.failure_rate > 0
        or config.simulation.systems.availability < 1
        or config.simulation.systems.round_deadline_s is not None
    )


def _beta_around(mean: float, rng: np.random.Generator) -> float:
    """A per-client probability with the given population mean (exact at 0 and 1)."""
    if mean <= 0.0 or mean >= 1.0:
        rng.random()  # keep the stream's length independent of the mean
        return float(mean)
    return float(rng.beta(_CONCENTRATION * mean, _CONCENTRATION * (1.0 - mean)))


def profile(config: RunConfig, client_id: int) -> SystemProfile:
    """The client's fixed system profile, drawn from the run seed and its id."""
    rng = np.random.default_rng([config.seed, client_id, _PROFILE_TAG])
    speed = float(np.exp(config.simulation.systems.speed_sigma * rng.standard_normal()))
    failure = _beta_around(config.simulation.systems.failure_rate, rng)
    availability = _beta_around(config.simulation.systems.availability, rng)
    return SystemProfile(speed, failure, availability)


def client_round(
    config: RunConfig, round_number: int, client_id: int, num_examples: int
) -> ClientRound:
    """What happens to one selected client in one round."""
    p = profile(config, client_id)
    rng = np.random.default_rng([config.seed, round_number, client_id, _ROUND_TAG])
    online, crash, jitter = rng.random(), rng.random(), np.exp(0.1 * rng.standard_normal())
    duration = (
        num_examples * config.training.local_epochs / (NOMINAL_EXAMPLES_PER_S * p.speed) * jitter
    )
    if online >= p.availability:
        fate = UNAVAILABLE
    elif crash < p.failure_probability:
        fate = FAILED
    elif (
        config.simulation.systems.round_deadline_s is not None
        and duration > config.simulation.systems.round_deadline_s
    ):
        fate = TIMEOUT
    else:
        fate = OK
    return ClientRound(client_id, fate, float(duration))


def round_time(config: RunConfig, rounds: list[ClientRound]) -> float:
    """Simulated wall-clock of a round: the slowest client that reported, or the deadline
    when a straggler missed it. An offline client never accepts the task and a crashed
    one drops its connection, so neither holds the round up."""
    if any(r.fate == TIMEOUT for r in rounds):
        return float(config.simulation.systems.round_deadline_s)
    return max((r.duration_s for r in rounds if r.fate == OK), default=0.0)
