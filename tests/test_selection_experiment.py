"""`fedpipe experiment selection`: the table's arithmetic, and a tiny end-to-end run that
writes the table, curves and plot and logs them to MLflow."""

import csv
import json

import pytest
from click.testing import CliRunner

from fedpipe import config
from fedpipe.cli import main
from fedpipe.experiments import selection
from fedpipe.ops import tracking


def _curve(policy, seed, accuracy, step_s):
    times = [i * step_s for i in range(len(accuracy))]
    return selection.RunCurve(policy, seed, accuracy, times, failed_at=None)


def test_summary_counts_rounds_and_simulated_time_to_target_over_seeds():
    curves = [
        _curve("uniform", 0, [0.1, 0.5, 0.7, 0.8], 2.0),
        _curve("uniform", 1, [0.1, 0.6, 0.8, 0.9], 2.0),
        _curve("linucb", 0, [0.1, 0.8, 0.85, 0.9], 1.0),
        _curve("linucb", 1, [0.1, 0.4, 0.5, 0.6], 1.0),
    ]
    uniform, linucb = selection.summarize(curves, target=0.8)
    assert uniform["policy"] == "uniform" and uniform["seeds reaching target"] == "2/2"
    assert uniform["rounds to target"] == "2.50 ± 0.50"
    assert uniform["simulated s to target"] == "5.00 ± 1.00"
    assert uniform["final accuracy"] == "0.85 ± 0.05"
    assert linucb["seeds reaching target"] == "1/2" and linucb["rounds to target"] == "1.00 ± 0.00"
    assert linucb["simulated s per round"] == "1.00 ± 0.00"
    assert selection.to_markdown([uniform]).splitlines()[2].startswith("| uniform | 2/2 |")


def test_experiment_command_writes_table_plot_and_logs_them(mlflow_uri, tmp_path):
    out = tmp_path / "exp"
    sets = [
        "data.dataset=digits",
        "data.data_dir=null",
        "data.num_clients=10",
        "selection.cohort_size=4",
        "training.rounds=2",
        "simulation.systems.round_deadline_s=3.0",
        f"tracking.uri={mlflow_uri}",
    ]
    args = ["experiment", "selection", "--seeds", "1", "--target", "0.3"]
    args += ["--policy", "uniform", "--policy", "linucb", "--output-dir", str(out)]
    result = CliRunner().invoke(main, args + [a for s in sets for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    with (out / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["policy"] for r in rows] == ["uniform", "linucb"]
    curves = json.loads((out / "curves.json").read_text())
    assert [len(c["accuracy"]) for c in curves] == [3, 3]  # round 0 and two rounds
    assert all(c["simulated_time_s"][0] == 0 < c["simulated_time_s"][-1] for c in curves)
    assert (out / "accuracy.png").stat().st_size > 10_000
    assert "| uniform |" in (out / "table.md").read_text()

    client = tracking.client(config.from_mapping({"tracking.uri": mlflow_uri}))
    experiment = client.get_experiment_by_name(selection.TASK["tracking.experiment"])
    (run,) = client.search_runs(
        [experiment.experiment_id], "tags.`fedpipe.experiment` = 'selection'"
    )
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert logged == {"table.csv", "table.md", "curves.json", "accuracy.png"}


@pytest.mark.parametrize(
    "bad", ["selection.client_weighting=median", "simulation.systems.round_deadline_s=0"]
)
def test_experiment_refuses_a_bad_override_before_running(bad, tmp_path):
    result = CliRunner().invoke(
        main, ["experiment", "selection", "--set", bad, "--output-dir", str(tmp_path)]
    )
    assert result.exit_code != 0 and "is not allowed" in result.output
    assert not any(tmp_path.iterdir())
