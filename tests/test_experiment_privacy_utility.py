"""`fedpipe experiment privacy-utility`: table, plot and MLflow summary of a tiny sweep."""

import csv
import math

from click.testing import CliRunner

from fedpipe import config
from fedpipe.cli import main
from fedpipe.ops import tracking
from fedpipe.privacy import accounting as privacy_accounting


def test_privacy_utility_writes_table_plot_and_logs_them(tmp_path, mlflow_uri):
    out = tmp_path / "out"
    sets = [
        "data.dataset=digits",
        "data.data_dir=null",
        "data.num_clients=20",
        "selection.cohort_size=10",
        "selection.clients_per_shard=10",
        "training.rounds=2",
        "training.local_epochs=1",
        f"tracking.uri={mlflow_uri}",
    ]
    args = ["experiment", "privacy-utility", "--noise", "1.0", "--output", str(out)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["setting"] for r in rows] == ["no DP", "z=1"]
    assert math.isinf(float(rows[0]["epsilon"]))
    cfg = config.load(
        None,
        {
            "data.num_clients": 20,
            "selection.cohort_size": 10,
            "aggregation.dp.clip_norm": 0.5,
            "aggregation.dp.noise_multiplier": 1.0,
            "aggregation.dp.delta": 1e-3,
        },
    )
    assert float(rows[1]["epsilon"]) == privacy_accounting.epsilon(cfg, 2)
    assert all(0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert "| z=1 | 1 | 0.5 |" in (out / "table.md").read_text()
    assert (out / "privacy_utility.png").read_bytes()[:4] == b"\x89PNG"

    client = tracking.client(cfg.replace({"tracking.uri": mlflow_uri}))
    experiment = client.get_experiment_by_name("fedpipe-experiments")
    (summary,) = client.search_runs(
        [experiment.experiment_id], "tags.`fedpipe.experiment` = 'privacy-utility'"
    )
    artifacts = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert artifacts == {"table.csv", "table.md", "privacy_utility.png"}
    assert summary.data.metrics["epsilon/z_1"] == float(rows[1]["epsilon"])
