"""Trainings as chained segment pipelines: bounded compiled size, one MLflow run across
segments, fresh trainings stay fresh, a crash resumes from the last finished segment, and
the cluster driver's chaining through kfp.Client's two calls."""

import dataclasses
import itertools
from pathlib import Path

import pytest
import yaml

from fedpipe import config
from fedpipe.artifacts.client_registry import ClientRegistry
from fedpipe.ops import compilation, local_run, segments, tracking
from fedpipe.simulation import faults


def _tiny(root: Path, overrides: dict) -> config.RunConfig:
    """The cheapest training there is: digits, logistic regression, 2 clients, one shard."""
    values = {
        "data.num_clients": 2,
        "selection.cohort_size": 2,
        "selection.clients_per_shard": 2,
        "training.local_epochs": 1,
        "model.name": "logistic_regression",
        "tracking.uri": f"sqlite:///{root / 'mlflow.db'}",
        "tracking.registered_model_name": "fedpipe-segments",
    }
    return config.from_mapping({**values, **overrides})


def _steps(cfg: config.RunConfig, run_id: str, metric: str = "accuracy") -> list[int]:
    return [m.step for m in tracking.client(cfg).get_metric_history(run_id, metric)]


def _runs(cfg: config.RunConfig):
    client = tracking.client(cfg)
    return client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )


# The plan: which segments a training runs.


def test_segments_cover_the_rounds_with_global_round_numbers(tmp_path):
    cfg = config.from_mapping({"training.rounds": 23, "pipeline.rounds_per_segment": 10})
    state = segments.new_training(cfg, tmp_path)
    plans = []
    while (plan := segments.next_segment(cfg, state)) is not None:
        plans.append(plan)
        uri = f"model-{plan.last_round}"
        state.record(plan, segments.SegmentResult("run-1", uri, f"registry-{plan.last_round}"))
    assert [(p.first_round, p.last_round) for p in plans] == [(1, 10), (11, 20), (21, 23)]
    assert [p.continuation for p in plans] == [False, True, True]
    assert [p.register_model for p in plans] == [False, False, True]
    # Each continuation starts from the previous segment's artifacts and MLflow run.
    assert plans[1].arguments(cfg.to_json()) == {
        "config_json": cfg.to_json(),
        "training_id": state.training_id,
        "first_round": 11,
        "model_uri": "model-10",
        "registry_uri": "registry-10",
        "mlflow_run_id": "run-1",
    }
    # The state survives the process: a resumed driver reads the same plan.
    again = segments.TrainingState.load(state.path)
    assert again == state and again.next_round == 24


def test_a_stop_ends_the_chain_instead_of_running_pass_through_rounds(tmp_path):
    cfg = config.from_mapping({"training.rounds": 100, "pipeline.rounds_per_segment": 10})
    state = segments.new_training(cfg, tmp_path)
    plan = segments.next_segment(cfg, state)
    stop = "target accuracy reached in round 7"
    state.record(plan, segments.SegmentResult("run-1", "m", "r", stop_reason=stop))
    assert segments.next_segment(cfg, state) is None and not state.finished


def test_resume_finds_the_unfinished_training_of_the_same_config_only(tmp_path):
    cfg = config.from_mapping({"training.rounds": 20, "pipeline.rounds_per_segment": 10})
    finished = segments.new_training(cfg, tmp_path)
    finished.registration = "registered"
    finished.save()
    assert segments.unfinished_training(cfg, tmp_path) is None
    crashed = segments.new_training(cfg, tmp_path)
    assert segments.unfinished_training(cfg, tmp_path).training_id == crashed.training_id
    with pytest.raises(ValueError, match="another config"):
        segments.unfinished_training(cfg.replace({"training.rounds": 30}), tmp_path)
    assert segments.new_training(cfg, tmp_path).training_id != crashed.training_id


# The compiled size does not grow with the rounds.


@pytest.mark.parametrize("secure", ["off", "secagg+"])
def test_compiled_size_does_not_grow_with_the_rounds(tmp_path, secure):
    sizes = {}
    for rounds in (10, 1000):
        cfg = config.from_mapping({"training.rounds": rounds, "aggregation.secure.mode": secure})
        paths = compilation.compile_training(cfg, tmp_path / f"{secure}-{rounds}")
        sizes[rounds] = max(p.stat().st_size for p in paths)
        for path in paths:
            assert compilation.estimate_workflow(path, cfg.shard_count).verdict == "ok"
    assert sizes[1000] <= 300_000
    # What differs: the config default, and whether the register step sits on a full segment.
    assert abs(sizes[1000] - sizes[10]) < 6_000


def test_segment_rounds_number_from_the_first_round_parameter(tmp_path):
    cfg = config.from_mapping({"training.rounds": 12, "pipeline.rounds_per_segment": 4})
    path = compilation.compile_segment(cfg, tmp_path, 4, continuation=True, register_model=False)
    spec = yaml.safe_load(path.read_text())
    root = spec["root"]
    assert set(root["inputDefinitions"]["parameters"]) >= {
        "first_round",
        "model_uri",
        "registry_uri",
        "mlflow_run_id",
        "training_id",
    }
    offsets = sorted(
        task["inputs"]["parameters"]["round_offset"]["runtimeValue"]["constant"]
        for name, task in root["dag"]["tasks"].items()
        if name.startswith("federated-round")
    )
    assert offsets == [0, 1, 2, 3]
    assert sum(1 for c in spec["deploymentSpec"]["executors"].values() if "importer" in c) == 2


# Through kfp.local: real pipelines, real MLflow.

pipeline = pytest.mark.pipeline


@pipeline
@pytest.mark.long  # 100 rounds x 5 kfp.local tasks: about 30 minutes on 2 cores
def test_hundred_rounds_run_as_chained_segments_in_one_mlflow_run(tmp_path):
    cfg = _tiny(tmp_path, {"training.rounds": 100, "pipeline.rounds_per_segment": 50})
    run = local_run.run_pipeline(cfg, tmp_path / "pipeline_root")
    assert [(s.first_round, s.last_round) for s in run.training.segments] == [(1, 50), (51, 100)]
    (mlflow_run,) = _runs(cfg)
    assert mlflow_run.info.run_id == run.training.mlflow_run_id
    assert _steps(cfg, mlflow_run.info.run_id) == list(range(101))
    assert _steps(cfg, mlflow_run.info.run_id, "clients_accepted") == list(range(1, 101))
    assert "promoted to `@champion`" in run.registration
    assert ClientRegistry.load(run.training.segments[-1].registry_uri).completed_rounds == 100


@pytest.fixture(scope="module")
def crashed_and_resumed(tmp_path_factory):
    """A training of two one-round segments whose second segment crashes (aggregate of round
    2 fails every attempt of the first run), then its resume."""
    root = tmp_path_factory.mktemp("segments_resume")
    cfg = _tiny(
        root,
        {
            "training.rounds": 2,
            "pipeline.rounds_per_segment": 1,
            "simulation.faults.schedule": ("pipeline_crash@2",),
        },
    )
    pipeline_root = root / "pipeline_root"
    with pytest.raises(local_run.TaskFailed) as crash:
        local_run.run_pipeline(cfg, pipeline_root)
    (state_file,) = (pipeline_root / "trainings").glob(f"*/{segments.STATE_FILE}")
    after_crash = segments.TrainingState.load(state_file)
    fault_state = faults.with_state_dir(cfg, pipeline_root)
    attempts = {n: faults.attempts(fault_state, n) for n in (1, 2)}
    resumed = local_run.run_pipeline(cfg, pipeline_root, resume=True)
    return cfg, pipeline_root, str(crash.value), after_crash, attempts, fault_state, resumed


@pipeline
def test_a_crash_mid_segment_resumes_from_the_last_finished_segment(crashed_and_resumed):
    cfg, _, message, after_crash, attempts, fault_state, resumed = crashed_and_resumed
    assert "secure-aggregate" in message and "its last lines" in message
    assert [(s.first_round, s.last_round) for s in after_crash.segments] == [(1, 1)]
    assert resumed.training.training_id == after_crash.training_id
    assert [(s.first_round, s.last_round) for s in resumed.training.segments] == [(1, 1), (2, 2)]
    # The finished segment did not run again; the crashed one ran its aggregate once more.
    assert faults.attempts(fault_state, 1) == attempts[1]
    assert len(faults.attempts(fault_state, 2)["aggregate"]) == len(attempts[2]["aggregate"]) + 1
    (run,) = _runs(cfg)
    assert run.info.run_id == resumed.training.mlflow_run_id
    assert _steps(cfg, run.info.run_id) == [0, 1, 2]


@pipeline
def test_the_same_config_run_again_is_a_new_training(crashed_and_resumed):
    cfg, pipeline_root, *_, resumed = crashed_and_resumed
    fresh = local_run.run_pipeline(cfg, pipeline_root)
    assert fresh.training.training_id != resumed.training.training_id
    assert fresh.training.mlflow_run_id != resumed.training.mlflow_run_id
    runs = _runs(cfg)
    assert len(runs) == 2
    for run in runs:
        assert _steps(cfg, run.info.run_id) == [0, 1, 2]
    client = tracking.client(cfg)
    versions = client.search_model_versions(f"name = '{cfg.tracking.registered_model_name}'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)


class FakeKfpClient:
    """kfp.Client's two calls the cluster driver makes, executing each submitted package
    with kfp.local (so the hand-over through MLflow is real); records what was asked."""

    def __init__(self, pipeline_root: Path) -> None:
        self.pipeline_root = pipeline_root
        self.submitted: list[dict] = []
        self._ids = itertools.count(1)
        self._states: dict[str, str] = {}

    def create_run_from_pipeline_package(
        self, pipeline_file, arguments, run_name, experiment_name, enable_caching
    ):
        from kfp import components, local

        run_id = f"kfp-run-{next(self._ids)}"
        self.submitted.append(
            dict(file=Path(pipeline_file).name, arguments=arguments, run_name=run_name)
        )
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(self.pipeline_root),
            raise_on_error=True,
            enable_caching=enable_caching,
        )
        try:
            components.load_component_from_file(pipeline_file)(**arguments)
            self._states[run_id] = "SUCCEEDED"
        except RuntimeError:
            self._states[run_id] = "FAILED"
        return dataclasses.make_dataclass("Run", ["run_id"])(run_id)

    def wait_for_run_completion(self, run_id, timeout):
        return dataclasses.make_dataclass("RunDetail", ["state"])(self._states[run_id])


@pipeline
def test_cluster_driver_chains_segments_through_kfp_client(tmp_path):
    """Not a cluster: a fake kfp.Client running each package locally. What is checked is
    the driver's chaining: what it submits, and what it reads back from MLflow."""
    cfg = _tiny(tmp_path, {"training.rounds": 2, "pipeline.rounds_per_segment": 1})
    client = FakeKfpClient(tmp_path / "pipeline_root")
    state = segments.new_training(cfg, tmp_path / "trainings")
    backend = segments.ClusterBackend(
        client, Path(state.folder) / "pipelines", experiment_name="fedpipe"
    )
    state = segments.chain(cfg, state, backend)
    first, second = client.submitted
    assert first["file"] == "segment-first-1-rounds.yaml"
    assert first["arguments"]["first_round"] == 1 and "model_uri" not in first["arguments"]
    assert second["file"] == "segment-continued-1-rounds-register.yaml"
    assert second["arguments"]["first_round"] == 2
    assert second["arguments"]["model_uri"] == state.segments[0].model_uri
    assert Path(state.segments[0].model_uri).exists()
    assert second["arguments"]["mlflow_run_id"] == state.mlflow_run_id
    assert _steps(cfg, state.mlflow_run_id) == [0, 1, 2]
    assert "version 1: promoted True" in state.registration


class FailingKfpClient:
    """A cluster on which every run fails."""

    def __init__(self) -> None:
        self.run_names: list[str] = []

    def create_run_from_pipeline_package(
        self, pipeline_file, arguments, run_name, experiment_name, enable_caching
    ):
        self.run_names.append(run_name)
        return dataclasses.make_dataclass("Run", ["run_id"])("kfp-run-1")

    def wait_for_run_completion(self, run_id, timeout):
        return dataclasses.make_dataclass("RunDetail", ["state"])("FAILED")


def test_a_failed_cluster_run_stops_the_chain_and_keeps_the_state_for_resume(tmp_path):
    cfg = config.from_mapping({"training.rounds": 10, "pipeline.rounds_per_segment": 5})
    state = segments.new_training(cfg, tmp_path / "trainings")
    client = FailingKfpClient()
    backend = segments.ClusterBackend(client, tmp_path / "pipelines", experiment_name="x")
    with pytest.raises(segments.SegmentFailed, match="kfp-run-1"):
        segments.chain(cfg, state, backend)
    assert client.run_names == [f"{state.training_id} rounds 1-5"]
    assert segments.TrainingState.load(state.path).segments == []
    assert segments.unfinished_training(cfg, tmp_path / "trainings").training_id == (
        state.training_id
    )
