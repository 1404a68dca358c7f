"""The `fedpipe` command: run the pipeline locally, simulate, compile, and baselines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fedpipe import config as run_config
from fedpipe import preflight
from fedpipe.clients import selection as selection_policies

RUNS_DIR = Path("runs")


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    try:
        return run_config.parse_overrides(pairs)
    except run_config.ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--set") from e


def _load_config(
    config_path: str | None,
    sets: tuple[str, ...],
    *,
    local: bool = True,
    extra: dict[str, Any] | None = None,
) -> run_config.RunConfig:
    """The run config; for a local run, relative paths are made absolute for the tasks.
    `extra` holds the values of dedicated flags (None: the flag was not given)."""
    flags = {k: v for k, v in (extra or {}).items() if v is not None}
    overrides = {**_parse_sets(sets), **flags}
    try:
        loaded = preflight.check(run_config.load(config_path, overrides))
        return run_config.resolve_local_paths(loaded, Path.cwd()) if local else loaded
    except run_config.ConfigError as e:
        raise click.UsageError(str(e)) from e


config_option = click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML run config."
)
set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="SECTION.FIELD=VALUE",
    help="Override one config field, e.g. aggregation.dp.noise_multiplier=1.0.",
)


@click.group()
def main() -> None:
    """fedpipe: federated learning as a Kubeflow pipeline, tracked in MLflow."""


@main.command()
@config_option
@set_option
@click.option(
    "--pipeline-root", type=click.Path(file_okay=False), default=str(RUNS_DIR / "pipeline_root")
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the last unfinished training of this config in this pipeline root from "
    "its last finished segment (without it, every run is a new training).",
)
@click.option("--verbose", is_flag=True, help="Stream the raw task logs too.")
@click.option(
    "--cold-tasks",
    is_flag=True,
    help="Start every task in a new Python, as a cluster pod does (by default tasks fork "
    "from one interpreter that has imported TensorFlow and MLflow once).",
)
def run(
    config_path: str | None,
    sets: tuple[str, ...],
    pipeline_root: str,
    resume: bool,
    verbose: bool,
    cold_tasks: bool,
) -> None:
    """Run a training through Kubeflow's local runner (no cluster), segment by segment."""
    from rich.console import Console

    from fedpipe.ops import local_run

    cfg = _load_config(config_path, sets)
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    try:
        outcome = local_run.run_pipeline(
            cfg,
            Path(pipeline_root),
            resume=resume,
            console=console,
            verbose=verbose,
            cold_tasks=cold_tasks,
        )
    except local_run.TaskFailed as e:
        console.print("training failed:", style="red")
        console.print(str(e), markup=False)
        console.print("continue it from its last finished segment with: fedpipe run --resume")
        raise SystemExit(1) from e
    console.print(outcome.summary(), markup=False)


@main.command()
@config_option
@set_option
@click.option("--workdir", type=click.Path(file_okay=False), default=str(RUNS_DIR / "simulation"))
@click.option("--register/--no-register", default=True, help="Register the final model in MLflow.")
def simulate(config_path: str | None, sets: tuple[str, ...], workdir: str, register: bool) -> None:
    """Run the same rounds in-process (same stage functions, no KFP)."""
    from fedpipe.simulation.runner import simulate as run_simulation

    cfg = _load_config(config_path, sets)
    result = run_simulation(cfg, workdir, register=register)
    click.echo(
        f"final held-out accuracy {result.accuracy[-1]:.4f} after {len(result.accuracy)} rounds; "
        f"MLflow run {result.mlflow_run_id}"
    )


@main.command()
@config_option
@set_option
@click.option("--epochs", type=int, default=None, help="Default: rounds x local_epochs.")
def baseline(config_path: str | None, sets: tuple[str, ...], epochs: int | None) -> None:
    """Train the same model centrally on the pooled client data, for comparison."""
    from fedpipe.training.centralized import train_centralized

    cfg = _load_config(config_path, sets)
    result = train_centralized(cfg, epochs or cfg.training.rounds * cfg.training.local_epochs)
    click.echo(
        f"centralized {cfg.model.name} on {cfg.data.dataset}: "
        f"held-out accuracy {result.accuracy:.4f}, "
        f"loss {result.loss:.4f}"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI to read runs from (default: the one `fedpipe run` writes to).",
)
@click.option("--mlflow-ui", default=None, help="Base URL of the MLflow UI, for links to it.")
def dashboard(host: str, port: int, tracking_uri: str | None, mlflow_ui: str | None) -> None:
    """Serve the monitoring dashboard: runs, their rounds, clients, privacy and health."""
    from fedpipe.dashboard import app

    if tracking_uri is None:
        defaults = run_config.resolve_local_paths(run_config.RunConfig(), Path.cwd())
        tracking_uri = defaults.tracking.uri

    click.echo(f"fedpipe dashboard on http://{host}:{port} (tracking {tracking_uri})")
    app.serve(host, port, tracking_uri, mlflow_ui)


@main.command(name="compile")
@config_option
@set_option
@click.option("--rounds", type=int, default=None, help="Training rounds (default: the config's).")
@click.option("--image", default=None, help="Runtime image for every component.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    default="federated_training",
    help="Folder for the segment pipelines.",
)
@click.option(
    "--target",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    show_default=True,
    help="kubernetes: mount credentials from secrets, size pods, shared state volume.",
)
@click.option(
    "--cluster-settings",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML overriding the secret/volume names and pod sizes (--target kubernetes).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Compile even in privacy.mode=reproducible-simulation (no privacy guarantee).",
)
@click.option(
    "--allow-oversized", is_flag=True, help="Keep pipelines a default KFP backend would refuse."
)
def compile_command(
    config_path: str | None,
    sets: tuple[str, ...],
    rounds: int | None,
    image: str | None,
    output: str,
    target: str,
    cluster_settings: str | None,
    force: bool,
    allow_oversized: bool,
) -> None:
    """Write the segment pipelines of a training as KFP IR YAML (run them in a chain with
    `fedpipe submit`), with the estimated size of the Argo workflow each becomes."""
    from fedpipe.ops import compilation, segments
    from fedpipe.ops.kubernetes import ClusterSettings
    from fedpipe.privacy import randomness

    cfg = _load_config(config_path, sets, local=False, extra={"training.rounds": rounds})
    if cfg.privacy.mode == randomness.REPRODUCIBLE and not force:
        raise click.UsageError(
            "privacy.mode=reproducible-simulation derives every mask, key and DP noise draw "
            "from the run seed: anyone who knows the seed (an MLflow param) can undo them. "
            "It is for simulations only; refusing to compile it for a cluster (pass --force "
            "to compile it anyway)."
        )
    if cfg.tracking.uri.startswith("sqlite:"):
        click.echo(
            f"warning: tracking.uri {cfg.tracking.uri} is a local file; on a "
            "cluster every pod would get its own database. Pass --set "
            "tracking.uri=http://<your MLflow server> for a cluster run.",
            err=True,
        )
    try:
        cluster = ClusterSettings.load(cluster_settings)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from e
    refused = []
    paths = compilation.compile_training(
        cfg, Path(output), image=image, target=target, cluster=cluster
    )
    for path in paths:
        estimate = compilation.estimate_workflow(path, cfg.shard_count)
        click.echo(f"wrote {path}: {estimate.describe()}")
        if estimate.verdict != "ok":
            refused.append(path)
    if refused:
        click.echo(
            f"warning: {len(refused)} pipeline(s) would exceed what a default KFP backend "
            "accepts; lower pipeline.rounds_per_segment (now "
            f"{segments.rounds_per_segment(cfg)}) so a segment holds fewer rounds.",
            err=True,
        )
        if not allow_oversized:
            for path in refused:
                path.unlink()
            raise SystemExit(1)
    click.echo(
        f"{cfg.training.rounds} rounds in segments of {segments.rounds_per_segment(cfg)} "
        f"for {target}; config_json defaults to this config"
    )


@main.command()
@config_option
@set_option
@click.option("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080.")
@click.option("--image", default=None, help="Runtime image for every component.")
@click.option("--experiment", "experiment_name", default="fedpipe", show_default=True)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=str(RUNS_DIR / "submit"),
    help="Where the trainings' state and compiled pipelines are kept.",
)
@click.option("--resume", is_flag=True, help="Continue the last unfinished training.")
def submit(
    config_path: str | None,
    sets: tuple[str, ...],
    host: str,
    image: str | None,
    experiment_name: str,
    workdir: str,
    resume: bool,
) -> None:
    """Run a training on a Kubeflow Pipelines cluster: one KFP run per segment, chained
    until the rounds, the target accuracy or the privacy budget is reached."""
    import kfp

    from fedpipe.ops import segments

    cfg = _load_config(config_path, sets, local=False)
    trainings = Path(workdir) / "trainings"
    state = segments.unfinished_training(cfg, trainings) if resume else None
    state = state or segments.new_training(cfg, trainings)
    backend = segments.ClusterBackend(
        kfp.Client(host=host),
        Path(state.folder) / "pipelines",
        experiment_name=experiment_name,
        image=image,
        enable_caching=resume,
    )
    state = segments.chain(cfg, state, backend)
    click.echo(
        f"training {state.training_id}: {state.next_round - 1} rounds in "
        f"{len(state.segments)} KFP runs; {state.registration}"
    )


@main.command(name="compile-components")
@click.option("--image", default=None, help="Runtime image for every component.")
def compile_components(image: str | None) -> None:
    """Regenerate components/<stage>/component.yaml."""
    from fedpipe.ops import compilation

    for path in compilation.compile_components(image=image):
        click.echo(f"wrote {path}")


@main.group()
def experiment() -> None:
    """Experiments: each writes a table (CSV + markdown) and a plot, and logs them to MLflow."""


def _seed_list(ctx: click.Context, param: click.Parameter, raw: str) -> list[int]:
    from fedpipe.experiments import seeds

    try:
        return seeds.parse(raw)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


def experiment_options(name: str, *, seeds: bool = True) -> Any:
    """The options every experiment command shares: --set, --seeds (each setting runs once
    per seed, the table gives mean ± std) and -o/--output (runs/experiments/<name>)."""

    def decorate(command: Any) -> Any:
        command = click.option(
            "-o",
            "--output",
            type=click.Path(file_okay=False),
            default=str(RUNS_DIR / "experiments" / name),
            show_default=True,
            help="Folder for the table, the per-seed rows and the plots.",
        )(command)
        if seeds:
            command = click.option(
                "--seeds",
                "seed_list",
                default="0,1,2",
                show_default=True,
                callback=_seed_list,
                help="Comma-separated run seeds: each setting runs once per seed.",
            )(command)
        return set_option(command)

    return decorate


def _experiment_config(defaults: dict[str, Any], sets: tuple[str, ...]) -> run_config.RunConfig:
    """An experiment's settings with --set on top, relative paths made absolute."""
    try:
        loaded = run_config.load(None, {**defaults, **_parse_sets(sets)})
        return run_config.resolve_local_paths(loaded, Path.cwd())
    except run_config.ConfigError as e:
        raise click.UsageError(str(e)) from e


@experiment.command(name="privacy-utility")
@experiment_options("privacy-utility", seeds=False)
@click.option(
    "--noise",
    "noise_multipliers",
    multiple=True,
    type=float,
    default=(0.3, 0.5, 1.0, 2.0),
    show_default=True,
    help="A DP noise multiplier to try (repeat the option).",
)
@click.option("--clip-norm", type=float, default=0.5, show_default=True, help="DP clip norm.")
def privacy_utility(
    sets: tuple[str, ...], noise_multipliers: tuple[float, ...], clip_norm: float, output: str
) -> None:
    """Held-out accuracy against epsilon for a few noise multipliers (DP-FedAvg)."""
    from fedpipe.experiments import privacy_utility as experiment_module

    base = _experiment_config(experiment_module.DEFAULTS, sets)
    experiment_module.run(base, list(noise_multipliers), clip_norm, Path(output))
    click.echo((Path(output) / "table.md").read_text())


@experiment.command(name="selection")
@config_option
@set_option
@click.option("--seeds", type=int, default=3, help="Seeds 0..N-1 for every policy.")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(tuple(selection_policies.POLICIES)),
    help="Policies to compare (default: all).",
)
@click.option("--target", type=float, default=0.85, help="Target held-out accuracy.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    default=str(RUNS_DIR / "experiments/selection"),
)
def experiment_selection(
    config_path: str | None,
    sets: tuple[str, ...],
    seeds: int,
    policies: tuple[str, ...],
    target: float,
    output_dir: str,
) -> None:
    """Selection policies on non-IID MNIST with heterogeneous clients, over seeds."""
    from fedpipe.experiments import selection

    overrides = tuple(f"{k}={v}" for k, v in selection.TASK.items()) + sets
    cfg = _load_config(config_path, overrides)
    rows = selection.run(
        cfg,
        seeds=list(range(seeds)),
        policies=policies or tuple(selection_policies.POLICIES),
        target=target,
        output_dir=Path(output_dir),
    )
    click.echo(selection.to_markdown(rows))


@experiment.command(name="secagg")
@config_option
@set_option
@click.option(
    "--out", type=click.Path(file_okay=False), default=str(RUNS_DIR / "experiments" / "secagg")
)
def experiment_secagg(config_path: str | None, sets: tuple[str, ...], out: str) -> None:
    """Accuracy with secure aggregation off, SecAgg, SecAgg+ and SecAgg+ with dropouts."""
    from fedpipe.experiments import secagg

    cfg = _load_config(config_path, sets)
    results = secagg.run(cfg, Path(out))
    click.echo((Path(out) / "secagg.md").read_text())
    click.echo(f"wrote {out}/secagg.csv, secagg.md, secagg.png ({len(results)} variants)")


@experiment.command()
@experiment_options("robustness")
@click.option(
    "--defences",
    default=None,
    help="Comma-separated subset of the defences, e.g. fedavg,median (default: all).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Simulations run at once, each in its own process.",
)
def robustness(
    sets: tuple[str, ...], seed_list: list[int], defences: str | None, jobs: int, output: str
) -> None:
    """Accuracy of each aggregator under each attack at 0, 10 and 30% attackers, on the
    experiment's non-IID MNIST setting (--set overrides any of its fields), over seeds."""
    from fedpipe.experiments import robustness as experiment_module

    base = _experiment_config(experiment_module.SETTINGS, sets)
    names = tuple(defences.split(",")) if defences else experiment_module.DEFENCES
    cells = experiment_module.run(base, names, seed_list, Path(output), jobs)
    paths = experiment_module.write(cells, base, Path(output))
    click.echo(experiment_module.to_markdown(cells))
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@experiment.command(name="self-healing")
@experiment_options("self-healing")
@click.option("--crash-rate", type=float, default=0.2, show_default=True, help="Task crashes.")
@click.option("--crash-round", type=int, default=3, show_default=True, help="Run crashes here.")
@click.option("--retries", type=int, default=2, show_default=True, help="Retries per task.")
def self_healing(
    sets: tuple[str, ...],
    seed_list: list[int],
    crash_rate: float,
    crash_round: int,
    retries: int,
    output: str,
) -> None:
    """A fault-free and a faulty pipeline run of the same task (kfp.local), once per seed:
    recovery time per fault, wall-time ratio, final accuracy of both."""
    from fedpipe.experiments import self_healing as experiment_module

    base = _experiment_config(experiment_module.DEFAULTS, sets)
    try:
        experiment_module.faulty(base, crash_rate, crash_round, retries)  # refuse bad values now
    except run_config.ConfigError as e:
        raise click.UsageError(str(e)) from e
    experiment_module.run(base, crash_rate, crash_round, retries, Path(output), seed_list)
    click.echo((Path(output) / "table.md").read_text())


def _add_agent_commands() -> None:
    from fedpipe.agents import commands

    for command in commands.COMMANDS:
        main.add_command(command)


_add_agent_commands()


@experiment.command(name="compression")
@config_option
@experiment_options("compression")
@click.option(
    "--kinds", default="none,q8,q4,topk", show_default=True, help="Compressors to compare."
)
@click.option("--topk-fraction", type=float, default=0.1, show_default=True, help="Top-k's share.")
def experiment_compression(
    config_path: str | None,
    sets: tuple[str, ...],
    seed_list: list[int],
    kinds: str,
    topk_fraction: float,
    output: str,
) -> None:
    """Held-out accuracy against bytes per client per round for each update compressor
    (by default on the MNIST reference setting, configs/mnist.yaml)."""
    from fedpipe.experiments import compression as experiment_module

    base = _load_config(config_path or "configs/mnist.yaml", sets)
    names = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = sorted(set(names) - set(run_config.COMPRESSIONS))
    if unknown:
        raise click.BadParameter(f"unknown compressor {unknown[0]!r}", param_hint="--kinds")
    experiment_module.run(base, names, topk_fraction, seed_list, Path(output))
    click.echo((Path(output) / "table.md").read_text())


@experiment.command(name="privacy-attacks")
@experiment_options("privacy-attacks")
@click.option(
    "--epsilons",
    default="inf,8,3,1",
    show_default=True,
    help="Membership inference: DP-FedAvg targets (inf = plain FedAvg).",
)
@click.option(
    "--iterations", type=int, default=300, show_default=True, help="Inversion optimiser steps."
)
@click.option("--clip-norm", type=float, default=0.5, show_default=True, help="DP clip norm.")
@click.option(
    "--references", type=int, default=4, show_default=True, help="Attacker's reference models."
)
@click.option(
    "--reference-epochs", type=int, default=5, show_default=True, help="Their training epochs."
)
@click.option(
    "--only",
    type=click.Choice(["inversion", "membership"]),
    default=None,
    help="Run one of the two attacks.",
)
def experiment_privacy_attacks(
    sets: tuple[str, ...],
    seed_list: list[int],
    epsilons: str,
    iterations: int,
    clip_norm: float,
    references: int,
    reference_epochs: int,
    only: str | None,
    output: str,
) -> None:
    """Update inversion (plain and under SecAgg) and membership inference (FedAvg and
    DP-FedAvg at several epsilons), over several seeds. --set applies to both settings."""
    from fedpipe.experiments import privacy_attacks as experiment_module

    bases = [
        _experiment_config(d, sets)
        for d in (experiment_module.INVERSION, experiment_module.MEMBERSHIP)
    ]
    try:
        targets = [float(e) for e in epsilons.split(",") if e.strip()]
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    text = experiment_module.run(
        bases[0],
        bases[1],
        seeds=seed_list,
        epsilons=targets,
        iterations=iterations,
        clip_norm=clip_norm,
        references=references,
        reference_epochs=reference_epochs,
        output=Path(output),
        parts=(only,) if only else ("inversion", "membership"),
    )
    click.echo(text)
