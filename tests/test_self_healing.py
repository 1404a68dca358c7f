"""Fault injection, retries, probation and round health, in-process (the pipeline test
runs the same faults through kfp.local)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from fedpipe import config
from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.artifacts.client_registry import ClientRecord, ClientRegistry
from fedpipe.clients import probation
from fedpipe.config import fault_schedule
from fedpipe.ops import compilation, round_health
from fedpipe.simulation import faults
from fedpipe.simulation.runner import simulate


def test_bad_fault_config_is_refused():
    for entry in ("explode@1:0", "crash@x:0", "crash@1", "pipeline_crash@2:1", "outage@1-x:3"):
        with pytest.raises(config.ConfigError) as e:
            config.from_mapping({"simulation.faults.schedule": [entry]})
        assert e.value.field == "simulation.faults.schedule"
    with pytest.raises(config.ConfigError) as e:
        config.from_mapping(
            {"simulation.faults.task_crash_rate": 0.6, "simulation.faults.task_hang_rate": 0.5}
        )
    assert e.value.field == "simulation.faults.task_crash_rate"
    # A schedule read from JSON (a list) gives the same, hashable, config.
    cfg = config.from_mapping({"simulation.faults.schedule": ("crash@1:0", "outage@2-4:3")})
    assert config.from_json(cfg.to_json()) == cfg and hash(cfg)


def test_task_faults_follow_the_rates_and_the_seed():
    cfg = config.from_mapping(
        {
            "simulation.faults.task_crash_rate": 0.2,
            "simulation.faults.task_hang_rate": 0.1,
            "simulation.faults.artifact_corruption_rate": 0.1,
        }
    )
    drawn = [faults.task_fault(cfg, n, s) for n in range(1, 201) for s in range(10)]
    for kind, rate in (
        (fault_schedule.CRASH, 0.2),
        (fault_schedule.HANG, 0.1),
        (fault_schedule.CORRUPT, 0.1),
    ):
        assert abs(drawn.count(kind) / len(drawn) - rate) < 0.03
    assert drawn == [faults.task_fault(cfg, n, s) for n in range(1, 201) for s in range(10)]
    other_seed = cfg.replace({"seed": 1})
    assert drawn != [faults.task_fault(other_seed, n, s) for n in range(1, 201) for s in range(10)]
    scheduled = config.from_mapping({"simulation.faults.schedule": ["hang@3:1", "outage@2-4:7"]})
    assert faults.task_fault(scheduled, 3, 1) == fault_schedule.HANG
    assert faults.task_fault(scheduled, 3, 0) is None
    assert [faults.client_out(scheduled, n, 7) for n in range(1, 6)] == [0, 1, 1, 1, 0]


def _outcomes(work, rounds):
    return [AggregationOutcome.load(work / f"round_{n:03d}" / "outcome.json") for n in rounds]


def test_simulation_recovers_from_every_fault_kind(small_config, tmp_path):
    cfg = small_config.replace(
        {
            "pipeline.task_retries": 1,
            "simulation.faults.task_hang_s": 0.3,
            "aggregation.quorum": 0.3,
            "simulation.faults.schedule": [
                "crash@1:0",
                "hang@2:1",
                "corrupt@2:0",
                "outage@1-3:5",
                "crash_always@3:1",
                "aggregate_crash@3",
            ],
        }
    )
    result = simulate(cfg, tmp_path / "work", register=False)
    assert len(result.accuracy) == 3 and result.accuracy[-1] > 0.5
    one, two, three = _outcomes(tmp_path / "work", (1, 2, 3))
    assert {r.client_id: r.reason for r in one.rejected} == {5: "no update received"}
    assert {r.client_id for r in two.rejected} == {0, 5}
    assert [r.reason for r in two.rejected if r.client_id == 0][0].startswith("checksum mismatch")
    assert {r.client_id for r in three.rejected} == {3, 4, 5}  # shard 1 given up on
    state = faults.with_state_dir(cfg, tmp_path / "work")
    health = [round_health.of_round(state, o) for o in (one, two, three)]
    # round 3: local train shard 1 failed twice, aggregate crashed once.
    assert [h.tasks_retried for h in health] == [1, 1, 2]
    assert [h.clients_lost for h in health] == [1, 1, 3]
    assert health[1].time_lost_s >= 0.3
    recoveries = round_health.recoveries(state)
    # One recovery per fault: crash_always fired on both attempts but counts once.
    assert len(faults.events(state)) == 6
    assert len(recoveries) == 5 and all(r.recovery_s is not None for r in recoveries)
    assert {r.kind for r in recoveries} == {"crash", "hang", "corrupt", "crash_always"} | {
        "aggregate_crash"
    }


def test_without_retries_a_crashed_task_costs_its_shard_not_the_round(small_config, tmp_path):
    cfg = small_config.replace(
        {
            "training.rounds": 1,
            "aggregation.quorum": 0.5,
            "simulation.faults.schedule": ["crash@1:1"],
        }
    )
    simulate(cfg, tmp_path / "work", register=False)
    (outcome,) = _outcomes(tmp_path / "work", (1,))
    assert sorted(s.client_id for s in outcome.accepted) == [0, 1, 2]
    assert {r.client_id for r in outcome.rejected} == {3, 4, 5}


def test_a_pipeline_crash_outlasts_the_retries(small_config, tmp_path):
    cfg = small_config.replace(
        {
            "training.rounds": 2,
            "pipeline.task_retries": 2,
            "simulation.faults.schedule": ["pipeline_crash@2"],
        }
    )
    with pytest.raises(faults.TaskCrashed):
        simulate(cfg, tmp_path / "work", register=False)
    state = faults.with_state_dir(cfg, tmp_path / "work")
    assert len(faults.attempts(state, 2)["aggregate"]) == 3


def _registry(failures: dict[int, tuple[int, int]]) -> ClientRegistry:
    """Clients 0-5; failures maps a client to (consecutive failures, last failure round)."""
    records = []
    for cid in range(6):
        streak, last = failures.get(cid, (0, None))
        records.append(ClientRecord(cid, 10, [5, 5], consecutive_failures=streak))
        records[-1].last_failure_round = last
    return ClientRegistry(records, completed_rounds=3)


def test_probation_sits_out_repeat_failures_then_readmits_them():
    cfg = config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 3,
            "selection.probation_failures": 2,
            "selection.probation_rounds": 2,
        }
    )
    registry = _registry({1: (2, 3), 2: (1, 3), 4: (3, 1)})
    ids = [c.client_id for c in probation.eligible(cfg, registry, 4).clients]
    assert ids == [0, 2, 3, 4, 5]  # 1 failed twice in a row lately; 4's probation is over
    assert [c.client_id for c in probation.eligible(cfg, registry, 6).clients] == list(range(6))
    # Too few left for a cohort: the longest-waiting come back first.
    crowded = _registry({c: (2, 3 + c % 2) for c in range(5)})
    assert [c.client_id for c in probation.eligible(cfg, crowded, 4).clients] == [0, 2, 5]
    off = cfg.replace({"selection.probation_failures": 0})
    assert probation.eligible(off, registry, 4) is registry


@pytest.mark.parametrize("policy", ["uniform", "power_of_choice", "oort", "linucb"])
def test_every_policy_selects_around_probation(policy):
    from fedpipe.clients import selection

    cfg = config.from_mapping(
        {
            "data.num_clients": 6,
            "selection.cohort_size": 3,
            "selection.probation_failures": 1,
            "selection.policy": policy,
        }
    )
    registry = _registry({1: (1, 3), 3: (1, 3)})
    candidates = probation.eligible(cfg, registry, 4)
    chosen = selection.policy_for(cfg).select(candidates, 3, selection.round_rng(0, 4))
    assert len(chosen) == 3 and not {1, 3} & set(chosen)


def _task_retries(spec: dict) -> dict[str, int]:
    """Max retry count of every task that runs a component, over all DAGs of the spec."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {
        name: task.get("retryPolicy", {}).get("maxRetryCount", 0)
        for dag in dags
        for name, task in dag["tasks"].items()
        if spec["components"][task["componentRef"]["name"]].get("executorLabel")
    }


def test_compiled_pipeline_retries_every_task_and_keys_initialize_on_the_training(tmp_path):
    cfg = config.from_mapping(
        {"training.rounds": 2, "pipeline.task_retries": 3, "pipeline.retry_backoff_s": 2}
    )
    spec = yaml.safe_load(compilation.compile_pipeline(cfg, tmp_path / "p.yaml").read_text())
    retries = _task_retries(spec)
    assert {"initialize", "select-clients", "local-train", "secure-aggregate"} <= set(retries)
    assert set(retries.values()) == {3}
    # A training's id is an input of initialize: a re-run of the same training (resume) hits
    # the cache, a new training with the same config does not.
    assert "training_id" in spec["root"]["dag"]["tasks"]["initialize"]["inputs"]["parameters"]
    plain = compilation.compile_pipeline(
        config.from_mapping({"training.rounds": 2}), tmp_path / "q.yaml"
    )
    assert set(_task_retries(yaml.safe_load(plain.read_text())).values()) == {0}


def _two_seeds(experiment):
    """Per-seed results of the experiment's two runs: seed 1 slower, the same accuracy."""
    crash = [
        round_health.Recovery(3, "aggregate", fault_schedule.PIPELINE_CRASH, r) for r in (12.5, 8.5)
    ]
    lost = round_health.Recovery(2, "local_train-1", fault_schedule.CRASH, None)
    return [
        experiment.RunResult(0, "fault-free", 5, 0.90, 100.0, 1, 0, []),
        experiment.RunResult(0, "faulty", 5, 0.88, 150.0, 2, 0, [crash[0], lost]),
        experiment.RunResult(1, "fault-free", 5, 0.90, 120.0, 1, 0, []),
        experiment.RunResult(1, "faulty", 5, 0.90, 132.0, 2, 1, [crash[1]]),
    ]


def test_experiment_table_is_the_mean_and_std_of_the_seeds(tmp_path):
    from fedpipe.experiments import self_healing as experiment

    base = config.from_mapping({**experiment.DEFAULTS, "tracking.uri": "sqlite://"})
    results = _two_seeds(experiment)
    table = experiment.to_markdown(results, base)
    assert "seeds 0, 1" in table and "Mean ± sample standard deviation" in table
    # Wall time of fault-free: seeds 100 and 120; the seeds agree on its accuracy (std 0).
    wall, acc = np.mean([100.0, 120.0]), np.std([100.0, 120.0], ddof=1)
    assert f"| fault-free | 2 | 5.0 ± 0.0 | 1.0 ± 0.0 | 0.0 ± 0.0 | {wall:.1f} ± {acc:.1f} " in (
        table
    )
    assert "| 0.9000 ± 0.0000 |" in table
    faulty_wall = f"141.0 ± {np.std([150, 132], ddof=1):.1f}"
    assert (
        f"| faulty | 2 | 5.0 ± 0.0 | 2.0 ± 0.0 | 0.5 ± 0.7 | {faulty_wall} | 0.8900 ± 0.0141 |"
        in (table)
    )
    ratio = [150 / 100, 132 / 120]
    assert f"Wall time faulty / fault-free: {np.mean(ratio):.2f} ± {np.std(ratio, ddof=1):.2f}" in (
        table
    )
    assert "accuracy impact -0.0100 (seeds from -0.0200 to +0.0000)" in table
    assert "| pipeline_crash | 2 | 2 | 10.5 ± 2.8 | 8.5 - 12.5 |" in table
    assert "| crash | 1 | 0 | - | - |" in table
    # The CSV keeps every seed's rows: a row per run and one per fault of it.
    rows = experiment.to_csv(results).splitlines()
    assert rows[0].startswith("seed,run,") and len(rows) == 1 + 4 + 3
    assert "1,faulty,pipeline_crash,3,aggregate,8.5,,,,," in rows
    experiment.figure(results).savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
    # The faulty config adds the crash rate, retries and the run crash to the same task.
    cfg = experiment.faulty(base, 0.2, 3, 2)
    assert (
        cfg.simulation.faults.task_crash_rate,
        cfg.pipeline.task_retries,
        cfg.simulation.faults.schedule,
    ) == (
        0.2,
        2,
        ("pipeline_crash@3",),
    )


def test_experiment_report_logs_the_table_and_seed_spread_to_mlflow(mlflow_uri, tmp_path):
    from fedpipe.experiments import self_healing as experiment
    from fedpipe.ops import tracking

    base = config.from_mapping({**experiment.DEFAULTS, "tracking.uri": mlflow_uri})
    results = _two_seeds(experiment)
    run_id = experiment.report(results, base, tmp_path / "out")
    client = tracking.client(base)
    run = client.get_run(run_id)
    assert run.data.tags["fedpipe.experiment"] == "self-healing"
    assert run.data.params["seeds"] == "[0, 1]"
    assert run.data.metrics["wall_s/faulty"] == pytest.approx(141.0)
    assert run.data.metrics["wall_s_std/faulty"] == pytest.approx(np.std([150, 132], ddof=1))
    assert run.data.metrics["accuracy_std/fault-free"] == 0.0
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "table.csv",
        "table.md",
        "self_healing.png",
    }
    logged = client.download_artifacts(run_id, "table.md", str(tmp_path))
    assert Path(logged).read_text() == experiment.to_markdown(results, base)


@pytest.mark.parametrize("seeds", ["0,0", "1,x", ","])
def test_experiment_seeds_option_refuses_a_bad_list_before_running(seeds, tmp_path):
    from click.testing import CliRunner

    from fedpipe.cli import main

    args = ["experiment", "self-healing", "--seeds", seeds, "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--seeds" in result.output
    assert not (tmp_path / "out").exists()
