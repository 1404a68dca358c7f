"""The Argo Workflow a KFP backend makes of our compiled pipelines (fedpipe.ops.argo_workflow)
and the refusal of segments a default backend would not take."""

# No `from __future__ import annotations`: KFP reads the component annotations as types.
import yaml
from click.testing import CliRunner
from kfp import compiler, dsl

from fedpipe import config
from fedpipe.cli import main
from fedpipe.ops import argo_workflow, compilation


def _segment(tmp_path, rounds: int, secure: str = "off", **settings):
    cfg = config.from_mapping(
        {"training.rounds": 1000, "aggregation.secure.mode": secure, **settings}
    )
    path = compilation.compile_segment(
        cfg, tmp_path / secure, rounds, continuation=True, register_model=False
    )
    return cfg, path, yaml.safe_load(path.read_text())


@dsl.component(base_image="python:3.11")
def _say(text: str):
    print(text)


@dsl.pipeline(name="two-loops")
def _two_loops():
    with dsl.ParallelFor(["a", "b", "c"], parallelism=2):
        _say(text="first")
    with dsl.ParallelFor(["d", "e", "f"]):
        _say(text="second")


def _compile(function, tmp_path) -> dict:
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(function, str(path))
    return yaml.safe_load(path.read_text())


def test_loops_become_the_templates_the_backend_compiler_makes(tmp_path):
    spec = _compile(_two_loops, tmp_path)
    compiled = argo_workflow.compile_workflow(spec)
    # The template layout of KFP's argocompiler testdata multiple_parallel_loops.yaml (two
    # loops of one component each): 12 templates, a loop becoming <component>-iteration and
    # <component>-<task>-iterator.
    assert sorted(compiled.template_names) == sorted(
        [
            "system-container-driver",
            "system-container-executor",
            "system-container-impl",
            "system-dag-driver",
            "comp-for-loop-2",
            "comp-for-loop-2-iteration",
            "comp-for-loop-2-for-loop-2-iterator",
            "comp-for-loop-4",
            "comp-for-loop-4-iteration",
            "comp-for-loop-4-for-loop-4-iterator",
            "root",
            "entrypoint",
        ]
    )
    loop = next(t for t in compiled.templates if t["name"] == "comp-for-loop-2-for-loop-2-iterator")
    assert loop["parallelism"] == 2
    # Both tasks run the same container: one component and one implementation argument.
    assert sum(k.startswith("implementations-") for k in compiled.arguments) == 1
    # Argo's nodes: entrypoint, root driver, root; per loop its DAG, driver and task group;
    # per item an iteration DAG, its driver and DAG; per container task a driver pod, the
    # executor DAG and the pod it runs.
    status = argo_workflow.estimate_status(compiled, spec, fan_out=99)  # literal items: 3
    assert status.nodes == 3 + 2 * (3 + 3 * (3 + 3))
    assert status.compressed_bytes < status.raw_bytes


def test_the_spec_holds_every_task_spec_and_each_component_once(tmp_path):
    _, _, spec = _segment(tmp_path, 4)
    compiled = argo_workflow.compile_workflow(spec)
    dags = [n for n, c in spec["components"].items() if "dag" in c]
    for name in dags:
        assert f"components-{name}" in compiled.arguments
        assert name in compiled.template_names
    executors = spec["deploymentSpec"]["executors"].values()
    containers = {argo_workflow.stable_json(e["container"]) for e in executors if "container" in e}
    importers = sum("importer" in e for e in executors)
    implementations = sum(k.startswith("implementations-") for k in compiled.arguments)
    assert implementations == len(containers) + importers
    # A continued segment imports the previous segment's model and state.
    assert importers and "system-importer" in compiled.template_names
    assert compiled.spec_bytes > sum(len(v) for v in compiled.arguments.values())


def test_template_count_grows_with_the_distinct_components_of_a_segment_not_the_rounds(
    tmp_path,
):
    counts = {}
    for rounds in (2, 4):
        _, _, spec = _segment(tmp_path / str(rounds), rounds)
        compiled = argo_workflow.compile_workflow(spec)
        counts[rounds] = (
            len(compiled.templates),
            sum(k.startswith("implementations-") for k in compiled.arguments),
        )
    # A round is a sub-pipeline (its DAG and its loop's three templates): two more rounds,
    # eight more templates; the container implementations do not grow at all.
    assert counts[4][0] - counts[2][0] == 2 * 4
    assert counts[4][1] == counts[2][1]
    # The total number of rounds does not enter a segment at all.
    for total in (8, 800):
        cfg = config.from_mapping({"training.rounds": total, "pipeline.rounds_per_segment": 4})
        paths = compilation.compile_training(cfg, tmp_path / f"total-{total}")
        counts[total] = max(
            compilation.estimate_workflow(p, cfg.shard_count).templates for p in paths
        )
    assert counts[8] == counts[800]


def test_a_secagg_segment_fits_argo_at_the_default_rounds_per_segment(tmp_path):
    cfg = config.from_mapping({"training.rounds": 100, "aggregation.secure.mode": "secagg+"})
    for path in compilation.compile_training(cfg, tmp_path):
        estimate = compilation.estimate_workflow(path, cfg.shard_count)
        assert estimate.verdict == "ok", estimate.describe()
        assert estimate.workflow_bytes < compilation.ARGO_DEFAULT_LIMIT
        assert estimate.spec_bytes < estimate.workflow_bytes


def test_the_kubernetes_settings_ride_along_per_component(tmp_path):
    cfg = config.from_mapping({"training.rounds": 4})
    path = compilation.compile_pipeline(cfg, tmp_path / "k.yaml", target="kubernetes")
    spec, platform = yaml.safe_load_all(path.read_text())
    compiled = argo_workflow.compile_workflow(spec, platform)
    with_config = [n for n in compiled.arguments if n.startswith("kubernetes-")]
    assert with_config and all(
        n.removeprefix("kubernetes-") in spec["components"] for n in with_config
    )
    plain = argo_workflow.compile_workflow(spec)
    assert compiled.spec_bytes > plain.spec_bytes


def test_constructs_the_model_does_not_build_are_refused(tmp_path):
    @dsl.pipeline(name="with-exit")
    def with_exit():
        with dsl.ExitHandler(_say(text="bye")):
            _say(text="hi")

    @dsl.pipeline(name="inner")
    def inner():
        _say(text="again")

    @dsl.pipeline(name="with-retry")
    def with_retry():
        inner().set_retry(num_retries=2)

    for function, construct in ((with_exit, "exit handler"), (with_retry, "retryPolicy")):
        spec = _compile(function, tmp_path)
        try:
            argo_workflow.compile_workflow(spec)
        except argo_workflow.UnsupportedConstruct as e:
            assert construct in str(e)
        else:
            raise AssertionError(f"{construct} was not refused")


def test_compile_refuses_an_oversized_segment_unless_allowed(tmp_path):
    args = [
        "compile",
        "--rounds",
        "12",
        "--set",
        "aggregation.secure.mode=secagg+",
        "--set",
        "pipeline.rounds_per_segment=12",
    ]
    refused = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a")])
    assert refused.exit_code == 1, refused.output
    assert "over Argo's default limit" in refused.output or "refused" in refused.output
    assert not list((tmp_path / "a").glob("segment-*.yaml"))
    kept = CliRunner().invoke(main, [*args, "--allow-oversized", "-o", str(tmp_path / "b")])
    assert kept.exit_code == 0, kept.output
    assert list((tmp_path / "b").glob("segment-*.yaml"))


def test_task_retries_use_the_retry_executor_templates(tmp_path):
    estimates = {}
    for retries in (0, 2):
        cfg, _, spec = _segment(tmp_path / str(retries), 2, **{"pipeline.task_retries": retries})
        compiled = argo_workflow.compile_workflow(spec)
        executors = [t for t in compiled.templates if t["name"].endswith("system-container-impl")]
        assert [t["name"].startswith("retry-") for t in executors] == [bool(retries)]
        assert ("retryStrategy" in executors[0]) == bool(retries)
        estimates[retries] = argo_workflow.estimate_status(compiled, spec, cfg.shard_count)
    # A retried pod is a Retry node over its attempt's Pod node: one more node per container
    # task (a segment's every container task carries the policy).
    container_tasks = (estimates[0].nodes - 3) // 3  # driver, executor DAG and pod each
    assert estimates[2].nodes > estimates[0].nodes
    assert estimates[2].nodes - estimates[0].nodes <= container_tasks
