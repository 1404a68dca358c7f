"""Under DP nothing client-level is released: one DP run through kfp.local, then every
MLflow metric, param, tag, artifact and registered-version field, and every pipeline output
a KFP UI shows, checked against an explicit list of what may be released.

The lists below are the review: a new metric, tag, artifact or KFP output fails this test
until it is added here, with its reason (fedpipe.ops.release holds the code's side).
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedpipe import stages
from fedpipe.aggregation.layer import Aggregate, RoundContext
from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.artifacts.global_model import GlobalModel
from fedpipe.config import RunConfig
from fedpipe.ops import local_run, tracking
from fedpipe.privacy import dp_fedavg
from fedpipe.simulation.runner import simulate

# Metrics of the run (and of its logged model) that DP allows: scores of the noised model
# on the held-out set, the privacy spent, the clip norm, and task-level health.
ALLOWED_METRICS = {
    "accuracy": "held-out accuracy of the noised model",
    "loss": "held-out loss of the noised model",
    "final_accuracy": "held-out accuracy of the registered model",
    "final_loss": "held-out loss of the registered model",
    "epsilon": "the privacy spent, from the config alone",
    "dp_clip_norm": "the clip norm (fixed, or adapted from a noised count)",
    "health/tasks_retried": "task retries (tasks serve shards, not clients)",
    "health/failed_attempts": "failed task attempts",
    "health/time_lost_s": "time lost to retries",
    "health/faults": "injected faults of the tasks",
}
# The same metrics in a KFP Metrics artifact (KFP names allow no "/").
ALLOWED_KFP_METRICS = {name.replace("/", "_") for name in ALLOWED_METRICS}
# MLflow's own tags, and fedpipe's run tags: all from the config or the run's identity.
ALLOWED_RUN_TAGS = {
    "mlflow.runName",
    "mlflow.user",
    "mlflow.source.name",
    "mlflow.source.type",
    "mlflow.source.git.commit",
    "mlflow.log-model.history",
    "fedpipe.dataset",
    "fedpipe.partitioner",
    "fedpipe.training_id",
    "fedpipe.privacy_mode",
}
ALLOWED_VERSION_TAGS = {
    "pipeline_run",
    "mlflow_run_id",
    "rounds",
    "dataset",
    "partition",
    "heldout_digest",
    "accuracy",
    "promotion",
    *(f"dp_{k}" for k in ("epsilon", "delta", "noise_multiplier", "clip_norm", "clipping")),
    "dp_accountant",
    "dp_rounds",
    "fedpipe.privacy_mode",
}
# Artifacts of the MLflow run, by path pattern, and why each may be released.
ALLOWED_ARTIFACTS = {
    r"rounds/round_\d{3}\.md": "round report: released metrics only (read below)",
    r"checkpoints/round_\d{4}\.json": "where a round's model and registry are (read below)",
    r"accuracy_per_round\.png": "held-out accuracy per round",
    r"model_card\.md": "the model card (read below)",
}
# Pipeline outputs by (component, output name) that a KFP UI shows and this test reads.
RELEASED_KFP_OUTPUTS = {
    ("initialize", "registry"): "client registry (bare ids under DP)",
    ("evaluate", "new_registry"): "client registry (bare ids under DP)",
    ("evaluate", "metrics"): "Metrics: the released round metrics",
    ("evaluate", "confusion"): "ClassificationMetrics: held-out confusion matrix",
    ("secure-aggregate", "report"): "Markdown round report",
    ("register", "report"): "Markdown registration verdict",
    ("initialize", "model"): "the round-0 model (before any client)",
    ("secure-aggregate", "new_model"): "the noised model",
    ("secure-aggregate", "outcome"): "aggregation outcome for evaluate (no client under DP)",
}
# The server's own view, which it holds to run the protocol: not a release.
SERVER_VIEW = {
    ("select-clients", "cohort"): "the sampled cohort: the clients must be told to train",
    ("broadcast-model", "plan"): "the round plan (cohort, shards) the clients read",
    ("local-train", "updates"): "the update shards the server aggregates",
}

# Folders of the pipeline root that are not pipeline outputs.
DRIVER_FOLDERS = {
    "trainings": "the local driver's folder: compiled pipelines, task logs, progress events "
    "(the operator's view, like the server's)",
}

# Client-level content in released text: ids next to a client, per-client keys, histograms,
# update norms and losses of clients, the clipped count, cohort membership or size.
FORBIDDEN_TEXT = [
    r"\bclient[ _/#-]*(id)?[ :=|]*\d",
    r"\bclients?_(accepted|rejected|flagged|lost)\b",
    r"\bclients? (accepted|rejected|lost)\b",
    r"per_client",
    r"label_histogram",
    r"update_norm",
    r"train_loss",
    r"clipped",
    r"cohort",
    r"participation",
    r"num_examples",
    r"secagg/",
    r"local_epsilon",
]


def _client_level(where: str, text: str) -> None:
    for pattern in FORBIDDEN_TEXT:
        found = re.search(pattern, text, re.IGNORECASE)
        assert not found, f"{where} releases client-level text {found.group(0)!r} ({pattern})"


def _allowed_metric(where: str, name: str) -> None:
    assert name in ALLOWED_METRICS, f"{where}: metric {name!r} is not in the reviewed list"


def _check_report(where: str, text: str) -> None:
    """A Markdown report: its metric rows all released ones, and no client-level text."""
    _client_level(where, text)
    for row in re.findall(r"^\| ([^|]+?) \| [-0-9.e+inf]+ \|$", text, re.MULTILINE):
        if row not in ("aggregation metric", "value"):
            _allowed_metric(where, row.strip())


def _check_registry(where: str, path: Path, config: RunConfig) -> None:
    registry = ClientRegistry.load(path)
    assert not registry.client_level, f"{where}: a client-level registry under DP"
    bare = ClientRegistry.initial([[]] * config.data.num_clients, client_level=False).clients
    assert registry.clients == bare, f"{where}: client records beyond the bare ids"
    assert registry.policy_state == {} and registry.simulated_time_s == 0, where


@pytest.fixture
def dp_config(small_config) -> RunConfig:
    return small_config.replace(
        {
            "selection.cohort_size": 3,
            "training.rounds": 2,
            "training.local_epochs": 1,
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.noise_multiplier": 0.8,
            "aggregation.dp.delta": 0.01,
            "tracking.registered_model_name": "fedpipe-dp-release",
        }
    )


def _mlflow_release(config: RunConfig) -> None:
    client = tracking.client(config)
    experiment = client.get_experiment_by_name(config.tracking.experiment).experiment_id
    (run,) = client.search_runs([experiment])
    run_id = run.info.run_id
    for name in run.data.metrics:
        _allowed_metric("MLflow run", name)
        assert client.get_metric_history(run_id, name), name
    expected = tracking.logged_params(config)
    assert set(run.data.params) == set(expected), "MLflow params other than the config's fields"
    for name, value in run.data.params.items():
        if not name.endswith(".state_dir"):  # the runner's folders for this run
            assert value == expected[name], f"param {name}={value!r} is not the config's"
    for name, value in run.data.tags.items():
        assert name in ALLOWED_RUN_TAGS, f"run tag {name!r}={value!r} is not in the reviewed list"
        _client_level(f"run tag {name}", value if name != "mlflow.log-model.history" else "")
    # Every artifact, opened and read.
    root = Path(client.download_artifacts(run_id, ""))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files, "the run logged no artifact"
    for name in files:
        reason = next((r for p, r in ALLOWED_ARTIFACTS.items() if re.fullmatch(p, name)), None)
        assert reason, f"artifact {name} is not in the reviewed list"
        if name.endswith((".md", ".json")):
            _check_report(f"artifact {name}", (root / name).read_text())
        if name.startswith("checkpoints/"):
            checkpoint = json.loads((root / name).read_text())
            _check_registry(name, Path(checkpoint["registry_uri"].removeprefix("file://")), config)
    for dataset in run.inputs.dataset_inputs:  # the pool and held-out set: no client's rows
        assert dataset.dataset.name.endswith(("-training-pool", "-heldout")), dataset.dataset.name
        assert {t.key for t in dataset.tags} <= {"mlflow.data.context", "partition", "digest"}
    # The logged model carries the final round's metrics and the run's params.
    for model in client.search_logged_models([experiment]):
        for metric in model.metrics or []:
            _allowed_metric(f"logged model {model.name}", metric.key)
        for name, value in (model.tags or {}).items():
            _client_level(f"logged model tag {name}", f"{name} {value}")
    # The registered version: its tags and its description (the model card).
    (version,) = client.search_model_versions(f"name = '{config.tracking.registered_model_name}'")
    for name, value in version.tags.items():
        assert name in ALLOWED_VERSION_TAGS, f"version tag {name!r} is not in the reviewed list"
        _client_level(f"version tag {name}", value)
    _check_report("version description", version.description)


def _component(task_folder: Path) -> str:
    """The component of a task folder (kfp.local numbers repeated tasks: evaluate-2)."""
    return re.sub(r"(-\d+)+$", "", task_folder.name)


def _kfp_release(pipeline_root: Path, config: RunConfig) -> None:
    seen = set()
    for path in sorted(p for p in pipeline_root.rglob("*") if p.is_file()):
        top = path.relative_to(pipeline_root).parts[0]
        if top in DRIVER_FOLDERS:
            continue
        assert top.startswith("federated-training-"), f"{path} is not in the reviewed list"
        if path.name == "executor_output.json":
            _check_executor_output(_component(path.parent), json.loads(path.read_text()))
            continue
        component, output = _component(path.parent), path.name
        key = (component, output)
        if key in SERVER_VIEW:
            continue
        assert key in RELEASED_KFP_OUTPUTS, f"KFP output {key} ({path}) is not in the reviewed list"
        seen.add(key)
        where = f"KFP {component}/{output}"
        if output in ("registry", "new_registry"):
            _check_registry(where, path, config)
        elif output == "metrics":
            for name in json.loads(path.read_text()):
                assert name in ALLOWED_KFP_METRICS, f"{where}: metric {name!r} not reviewed"
        elif output == "report":
            _check_report(where, path.read_text())
        elif output == "confusion":
            matrix = json.loads(path.read_text())["confusionMatrix"]
            assert len(matrix["annotationSpecs"]) == 10  # held-out labels, not clients
        elif output == "outcome":
            outcome = AggregationOutcome.load(path)
            assert outcome.cohort == outcome.accepted == outcome.rejected == [], where
            assert outcome.flagged == [], where
            for name in outcome.metrics:
                _allowed_metric(where, name)
        elif output in ("model", "new_model"):
            GlobalModel.load(path)  # weights, spec and DP server state: the model itself
    assert {k for k in RELEASED_KFP_OUTPUTS} <= seen, "an expected KFP output is missing"


def _check_executor_output(task: str, output: dict) -> None:
    """What kfp.local keeps of a task (the UI's view of its outputs and parameters)."""
    for name, artifacts in output.get("artifacts", {}).items():
        for artifact in artifacts["artifacts"]:
            metadata = artifact.get("metadata", {})
            if name == "metrics":
                for metric in metadata:
                    assert metric in ALLOWED_KFP_METRICS, f"{task} Metrics {metric!r} not reviewed"
            elif name != "confusion":
                _client_level(f"{task}/{name} metadata", json.dumps(metadata))
    parameters = output.get("parameterValues", {})
    if task != "select-clients":  # the shard indices the fan-out runs over: server view
        _client_level(f"{task} outputs", json.dumps(parameters))


@pytest.mark.pipeline
def test_nothing_client_level_is_released_under_dp(dp_config, tmp_path):
    run = local_run.run_pipeline(dp_config, tmp_path / "pipeline_root")
    assert "promoted" in run.registration
    _mlflow_release(dp_config)
    _kfp_release(run.pipeline_root, dp_config)


def test_a_dp_simulation_releases_nothing_client_level_and_continues(dp_config, tmp_path):
    """The same checks on simulate's MLflow run (the stages are the pipeline's), and the
    bare registry is all the next round, or the next segment, needs."""
    result = simulate(dp_config, tmp_path / "sim")
    assert result.registration is not None
    _mlflow_release(dp_config)
    for n in range(3):
        _check_registry(f"round {n}", tmp_path / f"sim/round_{n:03d}/registry.json", dp_config)
    registry = ClientRegistry.load(tmp_path / "sim/round_002/registry.json")
    assert registry.completed_rounds == 2 and registry.last_accuracy == result.accuracy[-1]
    longer = dp_config.replace({"training.rounds": 3, "selection.cohort_size": 6})
    stages.continue_training(
        longer,
        tmp_path / "sim/round_002/model.npz",
        tmp_path / "sim/round_002/registry.json",
        tmp_path / "next/model.npz",
        tmp_path / "next/registry.json",
        3,
        result.mlflow_run_id,
    )
    stages.select(longer, 3, tmp_path / "next/registry.json", tmp_path / "next/cohort.json")
    cohort = json.loads((tmp_path / "next/cohort.json").read_text())
    assert cohort["clients"] == list(range(6))  # q = 1: every registered client


def test_the_release_checks_name_what_they_find(small_config, dp_config, tmp_path):
    """The checks above fail, naming the key or file, on what a non-DP run releases."""
    plain = small_config.replace({"training.rounds": 1, "training.local_epochs": 1})
    simulate(plain, tmp_path / "sim")
    with pytest.raises(AssertionError, match="metric '.+' is not in the reviewed list"):
        _mlflow_release(plain)
    registry = tmp_path / "sim" / "round_001" / "registry.json"
    with pytest.raises(AssertionError, match="client-level registry"):
        _check_registry("registry", registry, dp_config)
    outcome = AggregationOutcome.load(tmp_path / "sim" / "round_001" / "outcome.json")
    with pytest.raises(AssertionError, match="client-level text"):
        _check_report("report", outcome.to_markdown())


@pytest.mark.parametrize("secure", ["off", "secagg"])
def test_small_and_empty_poisson_cohorts_are_normal_rounds_that_release_noise(
    secure, dp_config, tmp_path
):
    """At q = 2/400 with the quorum at 2 clients, seed 4 samples cohorts of 0, 1, 4 and 1
    (reproducible-simulation mode, so that they are known): every round completes and is
    accounted, and the empty one moves the model by the noise alone, z C / cohort_size
    per coordinate (under secure aggregation too, where no client sent a noise share)."""
    cfg = dp_config.replace(
        {
            "aggregation.secure.mode": secure,
            "seed": 4,
            "privacy.mode": "reproducible-simulation",
            "data.num_clients": 400,
            "selection.cohort_size": 2,
            "aggregation.quorum": 1.0,
            "training.rounds": 4,
            "aggregation.dp.delta": 1e-3,
            "server.learning_rate": 1.0,
        }
    )
    result = simulate(cfg, tmp_path / "sim", register=False)
    sizes = [
        len(json.loads((tmp_path / f"sim/round_{n:03d}/cohort.json").read_text())["clients"])
        for n in range(1, 5)
    ]
    assert sizes == [0, 1, 4, 1]
    epsilon = tracking.client(cfg).get_metric_history(result.mlflow_run_id, "epsilon")
    assert [m.step for m in epsilon] == [1, 2, 3, 4]  # every round accounted
    before = GlobalModel.load(tmp_path / "sim/round_000/model.npz").weights
    after = GlobalModel.load(tmp_path / "sim/round_001/model.npz").weights
    step = (after - before).astype(np.float64)
    assert np.std(step) == pytest.approx(0.8 * 1.0 / 2, rel=0.05)
    assert abs(np.mean(step)) < 0.01


def test_under_secure_aggregation_the_server_tops_up_the_noise_of_a_small_cohort(dp_config):
    """m = 3 noise shares make the full noise; a sum of k < m shares gets the missing
    (m - k) / m of the variance from the server, and a sum of m or more gets none."""
    cfg = dp_config.replace({"aggregation.secure.mode": "secagg", "aggregation.quorum": 1.0})
    layer = dp_fedavg.DpFedAvg.from_config(cfg)
    assert layer.quorum_clients == 3
    size = 200_000
    for contributors, share in ((0, 1.0), (1, 2 / 3), (3, 0.0), (4, 0.0)):
        rnd = RoundContext(1, list(range(contributors)), {}, {}, None, secure=True)
        added = layer.on_aggregate(Aggregate(np.zeros(size), 1.0, contributors), rnd).total
        assert np.std(added) == pytest.approx(0.8 * 1.0 * np.sqrt(share), abs=0.01)
