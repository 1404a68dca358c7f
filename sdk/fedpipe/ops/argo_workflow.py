"""The Argo Workflow a KFP v2 backend makes of a compiled pipeline, built here to measure it.

A KFP backend (2.14 and later) does not run the IR YAML: its compiler
(backend/src/v2/compiler/argocompiler) turns the PipelineSpec into an Argo Workflow, and
Argo keeps that object, spec and status, in one etcd entry. This module rebuilds the spec
the way that compiler lays it out, from a reading of it (no code of it is reused):

- every component spec and container implementation goes once into
  `spec.arguments.parameters` as compact JSON (`components-<key>`, `implementations-<key>`;
  a container component's key is a sha256 of its container, so components whose container
  is identical share one entry; a DAG's key is its component name), a kubernetes executor
  config per component into `kubernetes-<component name>`;
- one DAG template per DAG component (named after it, `root` for the pipeline), whose tasks
  carry the task spec inline as JSON: a container task becomes a driver task
  (`system-container-driver`) and an executor task (`system-container-executor` ->
  `system-container-impl`), a sub-DAG task a driver (`system-dag-driver`) and a DAG task,
  an importer one `system-importer` task, a `parameterIterator` task an `...-iterator` loop
  template and an `...-iteration` template that runs `withSequence` over the driver's count;
- an `entrypoint` template runs the root driver (with the runtime config) and `root`.

What it does not model raises `UnsupportedConstruct`: exit handlers, retry policies,
artifact iterators, pod metadata, PVC-creating dummy images, workspaces, resolvers.

The status part is an estimate: Argo adds one NodeStatus per node a run creates (every
DAG, driver, executor and loop iteration), and records in it the resolved input and output
parameters of the node; this module builds such entries with representative values (ids,
names, times, and the same component/task/container JSON the drivers receive; the driver's
pod-spec-patch output is sized from the container, the component and an executor input) and
measures them as Argo would store them, plain and compressed (Argo gzips and base64-encodes
`status.nodes` into `status.compressedNodes` when the object outgrows its limit).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import json
from typing import Any

# Fixed images and settings of a default KFP install: their length only enters the size.
DRIVER_IMAGE = "ghcr.io/kubeflow/kfp-driver:2.14.0"
LAUNCHER_IMAGE = "ghcr.io/kubeflow/kfp-launcher:2.14.0"
SERVICE_ACCOUNT = "pipeline-runner"
WORKFLOW_NAME = "federated-training-x7k2q"  # generateName plus Argo's 5 random characters
PVC_DUMMY_IMAGES = ("argostub/createpvc", "argostub/deletepvc")
EXIT_STRATEGY = "ALL_UPSTREAM_TASKS_COMPLETED"


class UnsupportedConstruct(ValueError):
    """The pipeline uses a construct this model of the backend compiler does not build."""


def stable_json(value: Any) -> str:
    """JSON the way the backend writes a proto message into the workflow: compact, keys
    sorted, and <, >, & escaped as Go's encoder does."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return go_escape(text)


def go_escape(text: str) -> str:
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def object_bytes(obj: Any) -> int:
    """Size of a Kubernetes object as the API server and Argo see it (compact JSON)."""
    return len(go_escape(json.dumps(obj, separators=(",", ":"), ensure_ascii=False)).encode())


def _param(name: str, value: str | None = None, default: str | None = None) -> dict:
    out: dict[str, Any] = {"name": name}
    if default is not None:
        out["default"] = default
    if value is not None:
        out["value"] = value
    return out


def _inputs(*params: dict) -> dict:
    return {"parameters": list(params)} if params else {}


def _depends(deps: list[str]) -> str:
    return " && ".join(f"{d}.Succeeded" for d in deps)


def _placeholder(name: str) -> str:
    return "{{workflow.parameters." + name + "}}"


def _task_output(task: str, param: str) -> str:
    return "{{tasks." + task + ".outputs.parameters." + param + "}}"


_PROXY_ENV = [{"name": n, "value": ""} for n in ("http_proxy", "https_proxy", "no_proxy")]
_PROXY_ARGS = ["--http_proxy", "", "--https_proxy", "", "--no_proxy", ""]
_DRIVER_RESOURCES = {
    "limits": {"cpu": "500m", "memory": "512Mi"},
    "requests": {"cpu": "100m", "memory": "64Mi"},
}
_POD_ENV = [
    {"name": "KFP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "KFP_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
]
_METADATA_ENV_FROM = [{"configMapRef": {"name": "metadata-grpc-configmap", "optional": True}}]
_SCRATCH = [
    ("kfp-launcher", "/kfp-launcher"),
    ("gcs-scratch", "/gcs"),
    ("s3-scratch", "/s3"),
    ("minio-scratch", "/minio"),
    ("dot-local-scratch", "/.local"),
    ("dot-cache-scratch", "/.cache"),
    ("dot-config-scratch", "/.config"),
]


def _output_path(name: str) -> str:
    return "{{outputs.parameters." + name + ".path}}"


def _in(name: str) -> str:
    return "{{inputs.parameters." + name + "}}"


RETRY_PARAMETERS = (
    "retry-max-count",
    "retry-backoff-duration",
    "retry-backoff-factor",
    "retry-backoff-max-duration",
)


def _executor_templates(retry: bool) -> list[dict]:
    """The executor DAG (skips the pod on a cache hit) and the pod template whose image,
    command and args come from the driver's pod-spec-patch; with a retry policy, named
    `retry-...`, the retry settings passed through as parameters into a retryStrategy."""
    prefix = "retry-" if retry else ""
    retry_params = RETRY_PARAMETERS if retry else ()
    mounts = [{"mountPath": path, "name": name} for name, path in _SCRATCH]
    executor = {
        "dag": {
            "tasks": [
                {
                    "arguments": {
                        "parameters": [
                            _param("pod-spec-patch", _in("pod-spec-patch")),
                            *(_param(p, _in(p)) for p in retry_params),
                        ]
                    },
                    "name": "executor",
                    "template": f"{prefix}system-container-impl",
                    "when": _in("cached-decision") + " != true",
                }
            ]
        },
        "inputs": _inputs(
            _param("pod-spec-patch"),
            _param("cached-decision", default="false"),
            *(_param(p, default="0") for p in retry_params),
        ),
        "metadata": {},
        "name": f"{prefix}system-container-executor",
        "outputs": {},
    }
    impl = {
        "container": {
            "command": ["should-be-overridden-during-runtime"],
            "env": _POD_ENV,
            "envFrom": _METADATA_ENV_FROM,
            "image": "gcr.io/ml-pipeline/should-be-overridden-during-runtime",
            "name": "",
            "resources": {},
            "volumeMounts": mounts,
        },
        "initContainers": [
            {
                "args": ["--copy", "/kfp-launcher/launch"],
                "command": ["launcher-v2"],
                "image": LAUNCHER_IMAGE,
                "name": "kfp-launcher",
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "100m"},
                },
                "volumeMounts": mounts[:1],
            }
        ],
        "inputs": _inputs(_param("pod-spec-patch"), *(_param(p) for p in retry_params)),
        "metadata": {},
        "name": f"{prefix}system-container-impl",
        "outputs": {},
        "podSpecPatch": _in("pod-spec-patch"),
        "volumes": [{"emptyDir": {}, "name": name} for name, _ in _SCRATCH],
    }
    if retry:
        impl["retryStrategy"] = {
            "backoff": {
                "duration": _in("retry-backoff-duration"),
                "factor": _in("retry-backoff-factor"),
                "maxDuration": _in("retry-backoff-max-duration"),
            },
            "limit": _in("retry-max-count"),
        }
    return [executor, impl]


def _retry_values(policy: dict) -> list[dict]:
    """The retry settings of a task as executor task parameters (durations in seconds)."""

    def seconds(duration: str) -> str:
        return duration.removesuffix("s")

    def number(value: float) -> str:
        return f"{value:g}"

    values = [_param("retry-max-count", str(policy.get("maxRetryCount", 0)))]
    if "backoffDuration" in policy:
        values.append(_param("retry-backoff-duration", seconds(policy["backoffDuration"])))
    values.append(_param("retry-backoff-factor", number(policy.get("backoffFactor", 0))))
    if "backoffMaxDuration" in policy:
        values.append(_param("retry-backoff-max-duration", seconds(policy["backoffMaxDuration"])))
    return values


def _driver_args(
    driver_type: str,
    run_args: list[str],
    spec_input: str,
    *outputs: tuple[str, str],
) -> list[str]:
    """A driver's arguments, the same for the container and the DAG driver but for the
    one spec it reads (container or runtime config) and the outputs it writes before the
    condition."""
    args = ["--type", driver_type, *run_args]
    for param in ("parent-dag-id", "component", "task", spec_input, "iteration-index"):
        flag = "dag_execution_id" if param == "parent-dag-id" else param.replace("-", "_")
        args += [f"--{flag}", _in(param)]
    for flag, param in (*outputs, ("condition_path", "condition")):
        args += [f"--{flag}", _output_path(param)]
    return args


def _system_templates(pipeline_name: str, kinds: set[str]) -> list[dict]:
    """The shared templates of the kinds of task the pipeline has, in the order the
    compiler adds them (first use)."""
    templates = []
    common_args = ["--pipeline_name", pipeline_name, "--run_id", "{{workflow.uid}}"]
    run_args = ["--run_name", "{{workflow.name}}", "--run_display_name", ""]
    if kinds & {"container", "retry"}:
        args = _driver_args(
            "CONTAINER",
            common_args + run_args,
            "container",
            ("cached_decision_path", "cached-decision"),
            ("pod_spec_patch_path", "pod-spec-patch"),
        )
        args += ["--kubernetes_config", _in("kubernetes-config"), *_PROXY_ARGS]
        templates.append(
            {
                "container": {
                    "env": _PROXY_ENV,
                    "args": args,
                    "command": ["driver"],
                    "image": DRIVER_IMAGE,
                    "name": "",
                    "resources": _DRIVER_RESOURCES,
                },
                "inputs": _inputs(
                    _param("component"),
                    _param("task"),
                    _param("container"),
                    _param("parent-dag-id"),
                    _param("iteration-index", default="-1"),
                    _param("kubernetes-config", default=""),
                ),
                "metadata": {},
                "name": "system-container-driver",
                "outputs": {
                    "parameters": [
                        {
                            "name": "pod-spec-patch",
                            "valueFrom": {"default": "", "path": "/tmp/outputs/pod-spec-patch"},
                        },
                        {
                            "default": "false",
                            "name": "cached-decision",
                            "valueFrom": {
                                "default": "false",
                                "path": "/tmp/outputs/cached-decision",
                            },
                        },
                        {
                            "name": "condition",
                            "valueFrom": {"default": "true", "path": "/tmp/outputs/condition"},
                        },
                    ]
                },
            }
        )
    if "container" in kinds:
        templates += _executor_templates(retry=False)
    if "retry" in kinds:
        templates += _executor_templates(retry=True)
    if "importer" in kinds:
        args = [
            "--executor_type",
            "importer",
            "--task_spec",
            _in("task"),
            "--component_spec",
            _in("component"),
            "--importer_spec",
            _in("importer"),
            *common_args,
            "--parent_dag_id",
            _in("parent-dag-id"),
            "--pod_name",
            "$(KFP_POD_NAME)",
            "--pod_uid",
            "$(KFP_POD_UID)",
            "--mlmd_server_address",
            "$(METADATA_GRPC_SERVICE_HOST)",
            "--mlmd_server_port",
            "$(METADATA_GRPC_SERVICE_PORT)",
        ]
        templates.append(
            {
                "container": {
                    "args": args,
                    "command": ["launcher-v2"],
                    "env": _POD_ENV,
                    "envFrom": _METADATA_ENV_FROM,
                    "image": LAUNCHER_IMAGE,
                    "name": "",
                    "resources": _DRIVER_RESOURCES,
                },
                "inputs": _inputs(
                    _param("task"), _param("component"), _param("importer"), _param("parent-dag-id")
                ),
                "metadata": {},
                "name": "system-importer",
                "outputs": {},
            }
        )
    args = _driver_args(
        _in("driver-type"),
        common_args + run_args,
        "runtime-config",
        ("execution_id_path", "execution-id"),
        ("iteration_count_path", "iteration-count"),
    )
    templates.append(
        {
            "container": {
                "env": _PROXY_ENV,
                "args": [*args, *_PROXY_ARGS],
                "command": ["driver"],
                "image": DRIVER_IMAGE,
                "name": "",
                "resources": _DRIVER_RESOURCES,
            },
            "inputs": _inputs(
                _param("component"),
                _param("runtime-config", default=""),
                _param("task", default=""),
                _param("parent-dag-id", default="0"),
                _param("iteration-index", default="-1"),
                _param("driver-type", default="DAG"),
            ),
            "metadata": {},
            "name": "system-dag-driver",
            "outputs": {
                "parameters": [
                    {"name": "execution-id", "valueFrom": {"path": "/tmp/outputs/execution-id"}},
                    {
                        "name": "iteration-count",
                        "valueFrom": {"default": "0", "path": "/tmp/outputs/iteration-count"},
                    },
                    {
                        "name": "condition",
                        "valueFrom": {"default": "true", "path": "/tmp/outputs/condition"},
                    },
                ]
            },
        }
    )
    return templates


@dataclasses.dataclass
class CompiledWorkflow:
    """The workflow object (spec part) and what the status estimate needs about it."""

    workflow: dict
    arguments: dict[str, str]  # workflow argument name -> value
    kinds: set[str]

    @property
    def templates(self) -> list[dict]:
        return self.workflow["spec"]["templates"]

    @property
    def template_names(self) -> list[str]:
        return [t["name"] for t in self.templates]

    @property
    def spec_bytes(self) -> int:
        return object_bytes(self.workflow)


class _Compiler:
    def __init__(self, spec: dict, platform: dict | None, runtime_config: dict) -> None:
        self.spec = spec
        self.components: dict = spec.get("components", {})
        self.executors: dict = spec.get("deploymentSpec", {}).get("executors", {})
        k8s = (platform or {}).get("platforms", {}).get("kubernetes", {})
        unknown = set(k8s) - {"deploymentSpec"}
        if unknown:
            raise UnsupportedConstruct(f"kubernetes platform settings {sorted(unknown)}")
        self.k8s_executors: dict = k8s.get("deploymentSpec", {}).get("executors", {})
        self.runtime_config = runtime_config
        self.arguments: dict[str, str] = {}
        self.dag_templates: list[dict] = []
        self.kinds: set[str] = set()
        self.visited: set[str] = set()

    # -- argument keys ---------------------------------------------------------------
    def key(self, component: str) -> str:
        if component == "root":
            return component
        label = self.components[component].get("executorLabel")
        container = self.executors.get(label, {}).get("container") if label else None
        if container is None:
            return component
        return hashlib.sha256(stable_json(container).encode()).hexdigest()

    def save(self, name: str, value: Any) -> None:
        self.arguments.setdefault(name, stable_json(value))

    # -- the visit (bottom-up, each component once) -------------------------------------
    def visit(self, name: str, component: dict) -> None:
        if name in self.visited:
            return
        label = component.get("executorLabel")
        if label:
            executor = self.executors[label]
            if label in self.k8s_executors:
                config = self.k8s_executors[label]
                if "podMetadata" in config:
                    raise UnsupportedConstruct(f"pod metadata on {name}")
                self.save(f"kubernetes-{name}", config)
            if "container" in executor:
                if executor["container"].get("image") in PVC_DUMMY_IMAGES:
                    raise UnsupportedConstruct(f"PVC dummy image on {name}")
                self.save(f"components-{self.key(name)}", component)
                self.save(f"implementations-{self.key(name)}", executor["container"])
            elif "importer" in executor:
                self.save(f"components-{self.key(name)}", component)
                self.save(f"implementations-{self.key(name)}", executor["importer"])
            else:
                raise UnsupportedConstruct(f"executor {label}: {sorted(executor)}")
            self.visited.add(name)
            return
        if "dag" not in component:
            raise UnsupportedConstruct(f"component {name}: neither executor nor DAG")
        tasks = component["dag"].get("tasks", {})
        for task_name in sorted(tasks):
            ref = tasks[task_name]["componentRef"]["name"]
            self.visit(ref, self.components[ref])
        self.dag(name, component)
        self.visited.add(name)

    def dag(self, name: str, component: dict) -> None:
        tasks = json.loads(json.dumps(component["dag"].get("tasks", {})))
        _add_implicit_dependencies(tasks)
        self.save(f"components-{self.key(name)}", component)
        template = {
            "dag": {"tasks": []},
            "inputs": _inputs(_param("parent-dag-id")),
            "metadata": {},
            "name": name,
            "outputs": {},
        }
        for task_name in sorted(tasks):
            task = tasks[task_name]
            if task.get("triggerPolicy", {}).get("strategy") == EXIT_STRATEGY:
                raise UnsupportedConstruct(f"exit handler task {task_name}")
            template["dag"]["tasks"] += self.task(task_name, task, _in("parent-dag-id"), name)
        self.dag_templates.append(template)
        if name == "root":
            driver = self.dag_driver(
                "root-driver",
                component=_placeholder("components-root"),
                runtime_config=stable_json(self.runtime_config),
            )
            root = _dag_task(
                "root", "root", _task_output("root-driver", "execution-id"), depends=["root-driver"]
            )
            self.dag_templates.append(
                {
                    "dag": {"tasks": [driver, root]},
                    "inputs": {},
                    "metadata": {},
                    "name": "entrypoint",
                    "outputs": {},
                }
            )

    def dag_driver(self, name: str, *, component: str, **params: str | None) -> dict:
        self.kinds.add("dag")
        values = [_param("component", component)]
        for key in ("iteration_index", "parent_dag_id"):
            if params.get(key):
                values.append(_param(key.replace("_", "-"), params[key]))
        if params.get("runtime_config"):
            values += [
                _param("runtime-config", params["runtime_config"]),
                _param("driver-type", "ROOT_DAG"),
            ]
        if params.get("task"):
            values.append(_param("task", params["task"]))
        return {"arguments": {"parameters": values}, "name": name, "template": "system-dag-driver"}

    def task(
        self, name: str, task: dict, parent: str, dag_name: str, iteration: str | None = None
    ) -> list[dict]:
        if "artifactIterator" in task:
            raise UnsupportedConstruct(f"artifactIterator on task {name}")
        ref = task["componentRef"]["name"]
        component = self.components[ref]
        retry = task.get("retryPolicy")
        if retry and "executorLabel" not in component:
            raise UnsupportedConstruct(f"retryPolicy on the sub-pipeline task {name}")
        task_json = stable_json(task)
        condition = task.get("triggerPolicy", {}).get("condition")
        deps = task.get("dependentTasks", [])
        if iteration is None and "parameterIterator" in task:
            return self.iterator(name, task, task_json, parent, dag_name)
        if "dag" in component:
            driver = self.dag_driver(
                f"{name}-driver",
                component=_placeholder(f"components-{self.key(ref)}"),
                parent_dag_id=parent,
                task=task_json,
                iteration_index=iteration,
            )
            if iteration is None and deps:
                driver["depends"] = _depends(deps)
            dag = _dag_task(
                name,
                ref,
                _task_output(f"{name}-driver", "execution-id"),
                depends=[f"{name}-driver"],
                condition=_task_output(f"{name}-driver", "condition"),
            )
            if condition:
                dag["when"] = _task_output(f"{name}-driver", "condition") + " != false"
            return [driver, dag]
        executor = self.executors[component["executorLabel"]]
        if "importer" in executor:
            if retry:
                raise UnsupportedConstruct(f"retryPolicy on importer task {name}")
            if condition:
                raise UnsupportedConstruct(f"condition on importer task {name}")
            self.kinds.add("importer")
            out = {
                "arguments": {
                    "parameters": [
                        _param("task", task_json),
                        _param("component", _placeholder(f"components-{self.key(ref)}")),
                        _param("importer", _placeholder(f"implementations-{self.key(ref)}")),
                        _param("parent-dag-id", parent),
                    ]
                },
                "name": name,
                "template": "system-importer",
            }
            if deps:
                out["depends"] = _depends(deps)
            return [out]
        self.kinds.add("retry" if retry else "container")
        key = self.key(ref)
        params = [
            _param("component", _placeholder(f"components-{key}")),
            _param("task", task_json),
            _param("container", _placeholder(f"implementations-{key}")),
            _param("parent-dag-id", parent),
        ]
        if iteration:
            params.append(_param("iteration-index", iteration))
        if f"kubernetes-{ref}" in self.arguments:
            params.append(_param("kubernetes-config", _placeholder(f"kubernetes-{ref}")))
        driver = {
            "arguments": {"parameters": params},
            "name": f"{name}-driver",
            "template": "system-container-driver",
        }
        if iteration is None and deps:
            driver["depends"] = _depends(deps)
        executor_task = {
            "arguments": {
                "parameters": [
                    _param("pod-spec-patch", _task_output(f"{name}-driver", "pod-spec-patch")),
                    _param(
                        "cached-decision",
                        _task_output(f"{name}-driver", "cached-decision"),
                        default="false",
                    ),
                    *(_retry_values(retry) if retry else ()),
                ]
            },
            "depends": _depends([f"{name}-driver"]),
            "name": name,
            "template": ("retry-" if retry else "") + "system-container-executor",
        }
        if condition:
            executor_task["when"] = _task_output(f"{name}-driver", "condition") + " != false"
        return [driver, executor_task]

    def iterator(self, name: str, task: dict, task_json: str, parent: str, dag_name: str) -> list:
        ref = task["componentRef"]["name"]
        driver = self.dag_driver(
            "iteration-driver",
            component=_placeholder(f"components-{self.key(ref)}"),
            parent_dag_id=_in("parent-dag-id"),
            task=task_json,
        )
        inner = self.task(
            "iteration-item", task, _in("parent-dag-id"), dag_name, _in("iteration-index")
        )
        iteration_template = {
            "dag": {"tasks": inner},
            "inputs": _inputs(_param("parent-dag-id"), _param("iteration-index")),
            "metadata": {},
            "name": f"{ref}-iteration",
            "outputs": {},
        }
        iterations = {
            "arguments": {
                "parameters": [
                    _param("parent-dag-id", _task_output("iteration-driver", "execution-id")),
                    _param("iteration-index", "{{item}}"),
                ]
            },
            "depends": _depends(["iteration-driver"]),
            "name": "iteration-iterations",
            "template": f"{ref}-iteration",
            "withSequence": {"count": _task_output("iteration-driver", "iteration-count")},
        }
        if task.get("triggerPolicy", {}).get("condition"):
            iterations["when"] = _task_output("iteration-driver", "condition") + " != false"
        loop_template = {
            "dag": {"tasks": [driver, iterations]},
            "inputs": _inputs(_param("parent-dag-id")),
            "metadata": {},
            "name": f"{ref}-{name}-iterator",
            "outputs": {},
        }
        limit = task.get("iteratorPolicy", {}).get("parallelismLimit")
        if limit:
            loop_template["parallelism"] = limit
        self.dag_templates += [iteration_template, loop_template]
        out = {
            "arguments": {"parameters": [_param("parent-dag-id", parent)]},
            "name": name,
            "template": loop_template["name"],
        }
        if task.get("dependentTasks"):
            out["depends"] = _depends(task["dependentTasks"])
        return [out]


def _dag_task(
    name: str, template: str, parent: str, *, depends: list[str], condition: str = ""
) -> dict:
    return {
        "arguments": {
            "parameters": [_param("parent-dag-id", parent), _param("condition", condition)]
        },
        "depends": _depends(depends),
        "name": name,
        "template": template,
    }


def _add_implicit_dependencies(tasks: dict) -> None:
    """A task that consumes another task's output depends on it (the compiler adds these
    to the task spec before writing it into the workflow)."""
    for task in tasks.values():
        inputs = task.get("inputs", {})
        producers = [
            spec["taskOutputParameter"]["producerTask"]
            for spec in inputs.get("parameters", {}).values()
            if "taskOutputParameter" in spec
        ] + [
            spec["taskOutputArtifact"]["producerTask"]
            for spec in inputs.get("artifacts", {}).values()
            if "taskOutputArtifact" in spec
        ]
        for producer in producers:
            if producer not in tasks:
                raise UnsupportedConstruct(f"unknown producer task {producer!r}")
            deps = task.setdefault("dependentTasks", [])
            if producer not in deps:
                deps.append(producer)


def runtime_config_of(spec: dict, parameters: dict | None = None) -> dict:
    """The PipelineJob runtime config a run of `spec` gets: the given parameter values,
    the root's defaults for the others, and the pipeline root."""
    values = dict(parameters or {})
    for name, definition in spec["root"].get("inputDefinitions", {}).get("parameters", {}).items():
        if name not in values and "defaultValue" in definition:
            values[name] = definition["defaultValue"]
        elif name not in values and definition.get("isOptional"):
            values[name] = None
    config: dict[str, Any] = {"parameterValues": values} if values else {}
    if spec.get("defaultPipelineRoot"):
        config["gcsOutputDirectory"] = spec["defaultPipelineRoot"]
    return config


def compile_workflow(
    spec: dict, platform: dict | None = None, runtime_config: dict | None = None
) -> CompiledWorkflow:
    """The Argo Workflow (spec part) a KFP backend makes of a PipelineSpec (the IR's first
    YAML document) and its optional platform spec (the second)."""
    if not spec.get("pipelineInfo", {}).get("name"):
        raise UnsupportedConstruct("pipelineInfo.name is empty")
    if "root" in spec.get("components", {}):
        raise UnsupportedConstruct('component name "root" is reserved')
    compiler = _Compiler(
        spec, platform, runtime_config if runtime_config is not None else runtime_config_of(spec)
    )
    compiler.visit("root", spec["root"])
    templates = _system_templates(spec["pipelineInfo"]["name"], compiler.kinds)
    # The compiler adds the shared templates on first use, interleaved with the DAGs; the
    # order changes nothing in size, so they lead here.
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "creationTimestamp": None,
            "generateName": spec["pipelineInfo"]["name"].split("/")[-1] + "-",
        },
        "spec": {
            "arguments": {
                "parameters": [{"name": k, "value": v} for k, v in compiler.arguments.items()]
            },
            "entrypoint": "entrypoint",
            "podMetadata": {
                "annotations": {"pipelines.kubeflow.org/v2_component": "true"},
                "labels": {"pipelines.kubeflow.org/v2_component": "true"},
            },
            "serviceAccountName": SERVICE_ACCOUNT,
            "templates": templates + compiler.dag_templates,
        },
        "status": {"finishedAt": None, "startedAt": None},
    }
    return CompiledWorkflow(workflow, compiler.arguments, compiler.kinds)


# -- status -------------------------------------------------------------------------------

# Per-node values Argo fills that the spec does not fix: representative, not measured.
_TIME = "2026-01-01T00:00:00Z"
_EXECUTION_ID = "12345"
_POD_FIELDS = {
    "hostNodeName": "gke-pool-1-node-abcd",
    "resourcesDuration": {"cpu": 3, "memory": 21},
}
# The launcher command, flags and container fields the driver adds around the component's
# command in the pod-spec-patch it outputs (an estimate from the driver's code).
_POD_SPEC_PATCH_OVERHEAD = 900
_RESOLVED_PARAMETER_BYTES = 64  # a resolved parameter of unknown size
_ARTIFACT_BYTES = 300  # an input or output artifact in the executor input


@dataclasses.dataclass
class StatusEstimate:
    nodes: int
    raw_bytes: int  # status.nodes as JSON
    compressed_bytes: int  # gzip + base64, as Argo's status.compressedNodes


class _StatusBuilder:
    def __init__(self, compiled: CompiledWorkflow, spec: dict, fan_out: int) -> None:
        self.compiled = compiled
        self.spec = spec
        self.fan_out = fan_out
        self.templates = {t["name"]: t for t in compiled.templates}
        self.nodes: dict[str, dict] = {}
        self.root_values = runtime_config_of(spec).get("parameterValues", {})

    def node_id(self) -> str:
        return f"{WORKFLOW_NAME}-{1000000000 + len(self.nodes) * 7919}"

    def add(self, name: str, display: str, kind: str, template: str, boundary: str, **extra):
        node_id = self.node_id()
        node = {
            "id": node_id,
            "name": name,
            "displayName": display,
            "type": kind,
            "templateName": template,
            "templateScope": "local/" + WORKFLOW_NAME,
            "phase": "Succeeded",
            "boundaryID": boundary,
            "startedAt": _TIME,
            "finishedAt": _TIME,
            "progress": "1/1",
            **extra,
        }
        self.nodes[node_id] = node
        return node

    def resolve(self, value: str | None, scope: dict[str, str]) -> str:
        """A parameter value as the node records it: workflow arguments and inputs resolved."""
        if value is None:
            return ""
        if value.startswith("{{workflow.parameters."):
            return self.compiled.arguments[value[len("{{workflow.parameters.") : -2]]
        if value.startswith("{{inputs.parameters."):
            return scope.get(value[len("{{inputs.parameters.") : -2], _EXECUTION_ID)
        if value.startswith("{{tasks."):
            return scope.get("@" + value, _EXECUTION_ID)
        return value

    def pod_spec_patch(self, arguments: dict[str, str]) -> str:
        """An estimate of the pod-spec-patch a container driver outputs: the launcher's
        command around the component's command, with the component spec and the executor
        input (resolved parameters, artifact URIs), which also replaces `{{$}}` in the args."""
        component = json.loads(arguments["component"])
        container = json.loads(arguments["container"])
        definitions = component.get("inputDefinitions", {})
        parameters = {
            name: self.root_values.get(
                name.removeprefix("pipelinechannel--"), "v" * _RESOLVED_PARAMETER_BYTES
            )
            for name in definitions.get("parameters", {})
        }
        artifacts = [
            *definitions.get("artifacts", {}),
            *component.get("outputDefinitions", {}).get("artifacts", {}),
        ]
        executor_input = stable_json(
            {
                "inputs": {"parameterValues": parameters},
                "outputs": {a: "a" * _ARTIFACT_BYTES for a in artifacts},
            }
        )
        args = [executor_input if a == "{{$}}" else a for a in container.get("args", [])]
        launcher = [
            "/kfp-launcher/launch",
            "--executor_input",
            executor_input,
            "--component_spec",
            arguments["component"],
            "--launcher_flags",
            "f" * _POD_SPEC_PATCH_OVERHEAD,
            "--",
        ]
        patch = {
            "containers": [
                {
                    "name": "main",
                    "image": container.get("image", ""),
                    "command": launcher + container.get("command", []),
                    "args": args,
                    "resources": container.get("resources", {}),
                }
            ]
        }
        return stable_json(patch)

    def run(self) -> StatusEstimate:
        root = self.add(WORKFLOW_NAME, WORKFLOW_NAME, "DAG", "entrypoint", "")
        self.template(self.templates["entrypoint"], root, {}, iteration=None)
        text = json.dumps(self.nodes, separators=(",", ":"), ensure_ascii=False)
        raw = go_escape(text).encode()
        compressed = base64.b64encode(gzip.compress(raw))
        return StatusEstimate(
            len(self.nodes), len(raw), len(compressed) + len('"compressedNodes":""')
        )

    def template(self, template: dict, node: dict, scope: dict, iteration: str | None) -> None:
        """Expand a DAG template's tasks under `node` (its DAG node)."""
        outputs: dict[str, str] = {}
        children = []
        for task in template["dag"]["tasks"]:
            local = {**scope, **outputs}
            args = {
                p["name"]: self.resolve(p.get("value"), local)
                for p in task.get("arguments", {}).get("parameters", [])
            }
            for child in self.run_task(task, args, node, local):
                children.append(child["id"])
                for param in child.get("outputs", {}).get("parameters", []):
                    outputs[f"@{{{{tasks.{task['name']}.outputs.parameters.{param['name']}}}}}"] = (
                        param["value"]
                    )
        node["children"] = children
        node["outboundNodes"] = children[-1:]

    def run_task(self, task: dict, args: dict, parent: dict, scope: dict) -> list[dict]:
        target = self.templates[task["template"]]
        inputs = [
            {"name": p["name"], "value": args.get(p["name"], p.get("default", ""))}
            for p in target.get("inputs", {}).get("parameters", [])
        ]
        values = {p["name"]: p["value"] for p in inputs}
        name = f"{parent['name']}.{task['name']}"
        if "withSequence" in task:
            group = self.add(name, task["name"], "TaskGroup", "", parent["id"])
            group["children"] = []
            count = int(self.resolve(task["withSequence"]["count"], scope))
            for i in range(count):
                item = dict(values, **{"iteration-index": str(i)})
                it_inputs = [{"name": k, "value": item[k]} for k in values]
                child = self.add(
                    f"{name}({i}:{i})",
                    f"{task['name']}({i}:{i})",
                    "DAG",
                    target["name"],
                    parent["id"],
                    inputs={"parameters": it_inputs},
                )
                group["children"].append(child["id"])
                self.template(target, child, item, iteration=str(i))
            return [group]
        if "dag" in target:
            child = self.add(
                name,
                task["name"],
                "DAG",
                target["name"],
                parent["id"],
                inputs={"parameters": inputs},
            )
            self.template(target, child, values, iteration=None)
            return [child]
        outputs = self.pod_outputs(target["name"], values)
        pod = {
            "inputs": {"parameters": inputs},
            "outputs": {"exitCode": "0", "parameters": outputs},
        }
        if "retryStrategy" in target:
            # A retried template is a Retry node over one Pod node per attempt (one here).
            retry = self.add(name, task["name"], "Retry", target["name"], parent["id"], **pod)
            attempt = self.add(
                f"{name}(0)",
                f"{task['name']}(0)",
                "Pod",
                target["name"],
                parent["id"],
                **pod,
                **_POD_FIELDS,
            )
            retry["children"] = [attempt["id"]]
            return [retry]
        return [
            self.add(name, task["name"], "Pod", target["name"], parent["id"], **pod, **_POD_FIELDS)
        ]

    def pod_outputs(self, template: str, values: dict) -> list[dict]:
        if template == "system-container-driver":
            return [
                {"name": "pod-spec-patch", "value": self.pod_spec_patch(values)},
                {"name": "cached-decision", "value": "false"},
                {"name": "condition", "value": "true"},
            ]
        if template == "system-dag-driver":
            task = json.loads(values["task"]) if values.get("task") else {}
            count = str(_iterations(task, self.fan_out))
            return [
                {"name": "execution-id", "value": _EXECUTION_ID},
                {"name": "iteration-count", "value": count},
                {"name": "condition", "value": "true"},
            ]
        return []


def _iterations(task: dict, fan_out: int) -> int:
    """How many iterations a loop task runs: its literal item count, else `fan_out`."""
    iterator = task.get("parameterIterator")
    if iterator is None:
        return 0
    raw = iterator.get("items", {}).get("raw")
    return len(json.loads(raw)) if raw else fan_out


def estimate_status(compiled: CompiledWorkflow, spec: dict, fan_out: int) -> StatusEstimate:
    """An estimate of `status.nodes` once every node of a run has finished, with every
    loop running `fan_out` iterations."""
    return _StatusBuilder(compiled, spec, fan_out).run()
