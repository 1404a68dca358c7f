"""What a user sees from `fedpipe run`: live progress, not the task log wall."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline


def test_run_prints_round_lines_and_the_verdict_and_keeps_task_logs_in_files(tmp_path):
    fedpipe = Path(sys.executable).parent / "fedpipe"
    command = [
        str(fedpipe),
        "run",
        "--pipeline-root",
        str(tmp_path / "pipeline_root"),
        *("--set", "rounds=2", "--set", "rounds_per_segment=1", "--set", "num_clients=2"),
        *("--set", "cohort_size=2", "--set", "clients_per_shard=2", "--set", "local_epochs=1"),
        *("--set", "model=logistic_regression", "--set", "registered_model_name=fedpipe-demo"),
        *("--set", f"mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) <= 40, done.stdout
    rounds = [line for line in lines if re.match(r"round +\d+/2: accuracy 0\.\d{4}", line)]
    assert [line.split(":")[0].split()[-1] for line in rounds] == ["1/2", "2/2"]
    assert "clients 2 accepted, 0 rejected" in rounds[0]
    for executor_noise in ("executor_input", "KFP Executor", "outputFile", "Executing task"):
        assert executor_noise not in done.stdout + done.stderr
    assert any("promoted to `@champion`" in line for line in lines)
    assert any("fedpipe dashboard" in line for line in lines)
    (training,) = (tmp_path / "pipeline_root" / "trainings").iterdir()
    logs = [p.name for p in (training / "logs").rglob("*.log")]
    assert logs.count("initialize.log") == 2  # one per segment
    assert sum(name.startswith("evaluate") for name in logs) == 2  # a log per round
    assert "KFP Executor" in next((training / "logs").rglob("initialize.log")).read_text()
