"""What a user sees from `fedpipe run`: live progress, not the task log wall."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedpipe.ops import progress


def _task_command(root: Path, task: str, code: str) -> list[str]:
    """A command shaped like kfp.local's: the executor input names the task's folder."""
    executor_input = {"outputs": {"outputFile": str(root / task / "executor_output.json")}}
    return [sys.executable, "-c", code, "--executor_input", json.dumps(executor_input)]


def test_task_output_goes_to_a_log_file_per_task_and_attempts_are_counted(tmp_path, capsys):
    root = tmp_path / "pipeline_root"
    logs = progress.TaskLogs(tmp_path / "logs", root)
    ok = _task_command(root, "run-1/for-loop-1-iteration-0/local-train", "print('trained')")
    bad = _task_command(root, "run-1/secure-aggregate", "import sys; print('boom'); sys.exit(3)")
    with logs.capture():
        from kfp.local import subprocess_task_handler

        assert subprocess_task_handler.run_local_subprocess(ok) == 0
        assert subprocess_task_handler.run_local_subprocess(bad) == 3
        assert subprocess_task_handler.run_local_subprocess(bad) == 3  # a retry
    assert capsys.readouterr().out == ""  # nothing reached the terminal
    train_log = tmp_path / "logs" / "run-1" / "for-loop-1-iteration-0__local-train.log"
    assert "trained" in train_log.read_text()
    assert logs.failed_names() == ["run-1/secure-aggregate"]
    assert (logs.retried(), logs.failed_attempts()) == (1, 2)
    failed_log = tmp_path / "logs" / "run-1" / "secure-aggregate.log"
    assert progress.tail(failed_log).count("boom") == 2


def test_progress_events_are_read_whole_lines_at_a_time(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(path))
    progress.emit("round", round=1, rounds=2, accuracy=0.5, loss=1.0, accepted=2, rejected=0)
    with path.open("a") as f:
        f.write('{"event": "round", "round": 2')  # a line still being written
    events, offset = progress.read_events(path)
    assert [e["round"] for e in events] == [1]
    assert progress.round_line(events[0]).startswith("round   1/2: accuracy 0.5000")
    assert progress.read_events(path, offset) == ([], offset)


@pytest.mark.pipeline
def test_run_prints_round_lines_and_the_verdict_and_keeps_task_logs_in_files(tmp_path):
    fedpipe = Path(sys.executable).parent / "fedpipe"
    command = [
        str(fedpipe),
        "run",
        "--pipeline-root",
        str(tmp_path / "pipeline_root"),
        *("--set", "training.rounds=2", "--set", "pipeline.rounds_per_segment=1"),
        *("--set", "data.num_clients=2", "--set", "selection.cohort_size=2"),
        *("--set", "selection.clients_per_shard=2", "--set", "training.local_epochs=1"),
        *("--set", "model.name=logistic_regression"),
        *("--set", "tracking.registered_model_name=fedpipe-demo"),
        *("--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"),
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
