"""Heterogeneous clients: seeded profiles, deadlines that drop stragglers, simulated time,
and a simulated run in which all of it reaches the registry and the round plan."""

import numpy as np

from fedpipe import config
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.simulation import client_systems
from fedpipe.simulation.runner import simulate


def test_default_clients_are_homogeneous_and_always_report():
    cfg = config.RunConfig()
    for client in range(10):
        assert client_systems.profile(cfg, client) == client_systems.SystemProfile(1.0, 0.0, 1.0)
        assert client_systems.client_round(cfg, 3, client, 100).fate == client_systems.OK


def test_profiles_are_seeded_per_client_and_spread_around_the_configured_means():
    cfg = config.from_mapping(
        {
            "data.num_clients": 500,
            "simulation.systems.speed_sigma": 1.0,
            "simulation.systems.failure_rate": 0.2,
            "simulation.systems.availability": 0.8,
        }
    )
    profiles = [client_systems.profile(cfg, i) for i in range(500)]
    assert profiles == [client_systems.profile(cfg, i) for i in range(500)]
    assert profiles != [client_systems.profile(cfg.replace({"seed": 1}), i) for i in range(500)]
    failure = np.array([p.failure_probability for p in profiles])
    availability = np.array([p.availability for p in profiles])
    speed = np.array([p.speed for p in profiles])
    assert abs(failure.mean() - 0.2) < 0.04 and abs(availability.mean() - 0.8) < 0.04
    assert abs(np.median(np.log(speed))) < 0.15 and speed.max() / speed.min() > 20
    assert (failure < 0.02).sum() > 50 and (failure > 0.5).sum() > 50  # far apart clients


def test_deadline_drops_stragglers_and_sets_the_round_time():
    cfg = config.from_mapping({"simulation.systems.round_deadline_s": 1.0})
    fast = client_systems.client_round(cfg, 1, 0, num_examples=10)  # ~0.5 s nominal
    slow = client_systems.client_round(cfg, 1, 1, num_examples=100)  # ~5 s nominal
    assert fast.fate == client_systems.OK and slow.fate == client_systems.TIMEOUT
    assert client_systems.round_time(cfg, [fast]) == fast.duration_s < 1.0
    assert client_systems.round_time(cfg, [fast, slow]) == 1.0
    crashed = client_systems.ClientRound(2, client_systems.FAILED, 0.9)
    offline = client_systems.ClientRound(3, client_systems.UNAVAILABLE, 0.9)
    assert client_systems.round_time(cfg, [fast, crashed, offline]) == fast.duration_s
    no_deadline = cfg.replace({"simulation.systems.round_deadline_s": None})
    both = [client_systems.client_round(no_deadline, 1, c, n) for c, n in ((0, 10), (1, 100))]
    assert client_systems.round_time(no_deadline, both) == both[1].duration_s


def test_a_simulated_run_with_flaky_clients_learns_and_records_their_history(
    small_config, tmp_path
):
    cfg = small_config.replace(
        {
            "data.num_clients": 12,
            "selection.cohort_size": 6,
            "training.rounds": 4,
            "aggregation.quorum": 0.1,
            "selection.policy": "linucb",
            "selection.client_weighting": "adaptive",
            "selection.max_client_weight": 0.3,
            "simulation.systems.failure_rate": 0.1,
            "simulation.systems.speed_sigma": 1.0,
            "simulation.systems.round_deadline_s": 4.0,
        }
    )
    result = simulate(cfg, tmp_path / "sim", register=False)
    again = simulate(cfg, tmp_path / "again", register=False)
    assert np.array_equal(result.model.weights, again.model.weights)
    assert result.accuracy[-1] > 0.2  # up from 0.10 at round 0, despite the dropouts

    registry = ClientRegistry.load(tmp_path / "sim" / "round_004" / "registry.json")
    assert sum(c.failures for c in registry.clients) > 0
    assert registry.simulated_time_s > 0 and registry.last_accuracy == result.accuracy[-1]
    assert "linucb" in registry.policy_state
    assert any(c.agreement is not None for c in registry.clients)
    plan = RoundPlan.load(tmp_path / "sim" / "round_004" / "plan.npz")
    assert np.isclose(sum(plan.cohort.client_weights), 1.0)
    assert max(plan.cohort.client_weights) <= 0.3 + 1e-9
