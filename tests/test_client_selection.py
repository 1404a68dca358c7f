"""Selection policies: cohort size, determinism, exploration, learning from a planted
signal, and policy state that survives the registry's JSON round trip."""

import numpy as np
import pytest

from fedpipe import config
from fedpipe.aggregation.outcome import AggregationOutcome, ClientStats, Rejection
from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.clients import history as client_history
from fedpipe.clients import selection
from fedpipe.stages.evaluate import _update_registry

NUM_CLIENTS, COHORT = 60, 6
USEFUL = set(range(12))  # a fifth of the clients, planted to be reliably more useful
LEARNED = ("power_of_choice", "oort", "linucb")


def _registry() -> ClientRegistry:
    rng = np.random.default_rng(7)
    return ClientRegistry(
        clients=[
            ClientRecord(i, 50, rng.multinomial(50, np.full(10, 0.1)).tolist(), last_round=None)
            for i in range(NUM_CLIENTS)
        ],
        last_accuracy=0.1,
    )


def _config(policy: str) -> config.RunConfig:
    return config.from_mapping(
        {
            "data.num_clients": NUM_CLIENTS,
            "selection.cohort_size": COHORT,
            "selection.policy": policy,
        }
    )


def _play_round(cfg, registry: ClientRegistry, n: int, cohort: list[int]) -> None:
    """A planted round: useful clients always report a high loss; the others report a low
    loss half of the time and send nothing otherwise. Accuracy rises with every useful
    client that reported, so the held-out reward follows them."""
    rng = np.random.default_rng([n, 99])
    reported = [c for c in cohort if c in USEFUL or rng.random() < 0.5]
    outcome = AggregationOutcome(
        round_number=n,
        cohort=cohort,
        accepted=[ClientStats(c, 50, 2.0 if c in USEFUL else 0.2, 1.0, 1.0, 0.5) for c in reported],
        rejected=[Rejection(c, "no update received") for c in cohort if c not in reported],
        skipped=False,
        started_at=0.0,
    )
    gain = 0.02 * sum(c in USEFUL for c in reported) / COHORT
    accuracy = min(0.99, registry.last_accuracy + gain)
    client_history.record_round(cfg, registry, outcome, accuracy)
    _update_registry(registry, outcome)


def _run(policy: str, rounds: int) -> tuple[ClientRegistry, list[list[int]]]:
    cfg = _config(policy)
    registry, chosen = _registry(), []
    for n in range(1, rounds + 1):
        cohort = selection.policy_for(cfg).select(registry, COHORT, selection.round_rng(0, n))
        chosen.append(cohort)
        _play_round(cfg, registry, n, cohort)
    return registry, chosen


@pytest.mark.parametrize("policy", list(selection.POLICIES))
def test_every_policy_selects_a_cohort_of_distinct_registered_clients(policy):
    registry, chosen = _run(policy, 8)
    for cohort in chosen:
        assert len(cohort) == COHORT == len(set(cohort))
        assert set(cohort) <= set(range(NUM_CLIENTS)) and cohort == sorted(cohort)


@pytest.mark.parametrize("policy", list(selection.POLICIES))
def test_policies_are_deterministic_given_seed_and_state(policy):
    registry, _ = _run(policy, 8)
    pick = selection.policy_for(_config(policy)).select
    assert pick(registry, COHORT, selection.round_rng(3, 9)) == pick(
        registry, COHORT, selection.round_rng(3, 9)
    )
    assert _run(policy, 8)[1] == _run(policy, 8)[1]


@pytest.mark.parametrize("policy", LEARNED)
def test_learned_policies_keep_trying_clients_they_have_not_seen(policy):
    # A greedy policy would lock onto its first cohort; these go on trying new clients
    # (at least 2.5 cohorts' worth within 15 rounds, while learning the planted signal).
    _, chosen = _run(policy, 15)
    seen = set().union(*chosen)
    assert len(seen) >= 2.5 * COHORT
    assert len(set().union(*chosen[5:])) > COHORT


def test_oort_keeps_exploring_a_share_of_unseen_clients():
    registry, _ = _run("oort", 3)
    unseen = {r.client_id for r in registry.clients if client_history.times_selected(r) == 0}
    cohort = selection.Oort(exploration=0.5).select(registry, COHORT, selection.round_rng(0, 4))
    assert len(unseen & set(cohort)) == COHORT // 2


@pytest.mark.parametrize("policy", LEARNED)
def test_learned_policies_come_to_prefer_the_planted_useful_clients(policy):
    _, chosen = _run(policy, 40)
    late = [c for cohort in chosen[-10:] for c in cohort]
    share = sum(c in USEFUL for c in late) / len(late)
    assert share >= 0.6, f"{policy}: useful share {share:.2f} (base rate 0.2)"


def test_uniform_random_does_not_learn_the_planted_signal():
    _, chosen = _run("uniform", 40)
    late = [c for cohort in chosen[-10:] for c in cohort]
    assert sum(c in USEFUL for c in late) / len(late) <= 0.4


def test_bandit_state_persists_in_the_registry_artifact_and_resumes_identically(tmp_path):
    registry, _ = _run("linucb", 20)
    assert set(registry.policy_state["linucb"]) == {"A", "b"}
    registry.save(tmp_path / "registry.json")
    resumed = ClientRegistry.load(tmp_path / "registry.json")
    assert resumed == registry
    pick = selection.policy_for(_config("linucb")).select
    assert pick(resumed, COHORT, selection.round_rng(0, 21)) == pick(
        registry, COHORT, selection.round_rng(0, 21)
    )
    # The state is what drives the choice: forgetting it changes the cohort.
    resumed.policy_state.clear()
    assert pick(resumed, COHORT, selection.round_rng(0, 21)) != pick(
        registry, COHORT, selection.round_rng(0, 21)
    )


def test_round_reward_is_the_share_of_remaining_error_removed():
    assert client_history.round_reward(0.5, 0.75) == pytest.approx(0.5)
    assert client_history.round_reward(0.9, 0.85) == pytest.approx(-0.5)
    assert client_history.round_reward(None, 0.9) == 0.0


def test_label_entropy_and_reliability_features():
    one_class = ClientRecord(0, 10, [10, 0, 0, 0])
    balanced = ClientRecord(1, 8, [2, 2, 2, 2], participation=3, failures=1)
    assert client_history.label_entropy(one_class) == 0.0
    assert client_history.label_entropy(balanced) == pytest.approx(1.0)
    assert client_history.reliability(one_class) == 0.5
    assert client_history.reliability(balanced) == pytest.approx(4 / 6)
