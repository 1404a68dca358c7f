"""Self-healing in kfp.local: every task fault injected in one run that crashes at round 3,
then the same config re-run resumes from the cache without redoing finished tasks."""

import json

import pytest

from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.ops import local_run, tracking
from fedpipe.simulation import faults

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def crashed_then_resumed(tmp_path_factory):
    from fedpipe import config

    root = tmp_path_factory.mktemp("self_healing")
    cfg = config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 6,
            "selection.clients_per_shard": 3,
            "training.rounds": 3,
            "training.local_epochs": 1,
            "aggregation.quorum": 0.3,
            "pipeline.task_retries": 1,
            "pipeline.retry_backoff_s": 0,
            "simulation.faults.task_hang_s": 1.0,
            "simulation.faults.schedule": (
                "crash@1:0",  # a retry recovers
                "hang@1:1",  # killed at its deadline, a retry recovers
                "corrupt@2:0",  # one client's update fails its checksum
                "crash_always@2:1",  # fails both attempts: the round goes on without the shard
                "pipeline_crash@3",  # aggregate fails every attempt: the run fails
            ),
            "tracking.uri": f"sqlite:///{root / 'mlflow.db'}",
            "tracking.registered_model_name": "fedpipe-self-healing",
        }
    )
    pipeline_root = root / "pipeline_root"
    with pytest.raises(RuntimeError):  # nothing to resume yet: a new training, cache on
        local_run.run_pipeline(cfg, pipeline_root, resume=True)
    state = faults.with_state_dir(cfg, pipeline_root)
    attempts_after_crash = {n: faults.attempts(state, n) for n in (1, 2, 3)}
    resumed = local_run.run_pipeline(cfg, pipeline_root, resume=True)
    return cfg, state, attempts_after_crash, resumed


def _outcome(pipeline_root, round_number):
    """The aggregation outcome of a round (its artifact, wherever the run put it)."""
    for path in pipeline_root.glob("federated-training-*/**/secure-aggregate*/outcome"):
        outcome = AggregationOutcome.load(path)
        if outcome.round_number == round_number:
            return outcome
    raise AssertionError(f"no outcome of round {round_number}")


def test_retries_recover_crashed_and_hung_tasks(crashed_then_resumed):
    _, state, attempts, _ = crashed_then_resumed
    assert {site: len(t) for site, t in attempts[1].items()} == {
        "local_train-0": 2,
        "local_train-1": 2,
        "aggregate": 1,
    }
    # The hung attempt held its task until the deadline before the retry started.
    hung = attempts[1]["local_train-1"]
    assert hung[1] - hung[0] >= state.simulation.faults.task_hang_s


def test_round_goes_on_without_a_lost_shard_and_rejects_a_corrupted_update(
    crashed_then_resumed,
):
    cfg, state, attempts, _ = crashed_then_resumed
    assert len(attempts[2]["local_train-1"]) == cfg.pipeline.task_retries + 1
    outcome = _outcome(crashed_then_resumed[3].pipeline_root, 2)
    reasons = {r.client_id: r.reason for r in outcome.rejected}
    assert reasons[0].startswith("checksum mismatch")
    assert all(reasons[c].startswith("no update received") for c in (3, 4, 5))
    assert sorted(s.client_id for s in outcome.accepted) == [1, 2]


def test_resume_skips_finished_tasks_and_reports_health(crashed_then_resumed):
    cfg, state, attempts_after_crash, resumed = crashed_then_resumed
    after_resume = {n: faults.attempts(state, n) for n in (1, 2, 3)}
    # No local-train task ran again on resume (all were cached); only aggregate of round 3,
    # whose crash outlasted its retries, ran once more and succeeded.
    for n in (1, 2, 3):
        for site, times in after_resume[n].items():
            extra = 1 if (n, site) == (3, "aggregate") else 0
            assert len(times) == len(attempts_after_crash[n][site]) + extra, (n, site)
    assert len(after_resume[3]["aggregate"]) == cfg.pipeline.task_retries + 2
    assert "promoted to `@champion`" in resumed.registration

    client = tracking.client(cfg)
    (run,) = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )
    run_id = run.info.run_id  # the resumed run logs into the crashed run's MLflow run
    assert [m.step for m in client.get_metric_history(run_id, "accuracy")] == [0, 1, 2, 3]
    retried = {m.step: m.value for m in client.get_metric_history(run_id, "health/tasks_retried")}
    lost = {m.step: m.value for m in client.get_metric_history(run_id, "health/clients_lost")}
    assert retried == {1: 2, 2: 1, 3: 1} and lost == {1: 0, 2: 3, 3: 0}
    report = json.dumps(client.list_artifacts(run_id, "rounds")[0].path)
    assert "round_001" in report
    kinds = {e["kind"] for e in faults.events(state)}
    assert kinds == {"crash", "hang", "corrupt", "crash_always", "pipeline_crash"}
