"""The `fedpipe` command: run the pipeline locally, simulate, compile, and baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from fedpipe import config as run_config

RUNS_DIR = Path("runs")


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected FIELD=VALUE", param_hint="--set")
        values[key.strip()] = yaml.safe_load(raw)
    return values


def _load_config(
    config_path: str | None, sets: tuple[str, ...], *, local: bool = True, **extra: Any
) -> run_config.RunConfig:
    """The run config; for a local run, relative paths are made absolute for the tasks.
    `extra` holds the values of dedicated flags (None: the flag was not given)."""
    overrides = {**_parse_sets(sets), **{k: v for k, v in extra.items() if v is not None}}
    try:
        loaded = run_config.load(config_path, overrides)
        return run_config.resolve_local_paths(loaded, Path.cwd()) if local else loaded
    except run_config.ConfigError as e:
        raise click.UsageError(str(e)) from e


config_option = click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML run config."
)
set_option = click.option(
    "--set", "sets", multiple=True, metavar="FIELD=VALUE", help="Override one config field."
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
    help="Reuse the tasks a crashed run of the same config in this pipeline root finished.",
)
def run(config_path: str | None, sets: tuple[str, ...], pipeline_root: str, resume: bool) -> None:
    """Run the compiled pipeline through Kubeflow's local runner (no cluster)."""
    from fedpipe.ops import local_run

    cfg = _load_config(config_path, sets)
    outcome = local_run.run_pipeline(cfg, Path(pipeline_root), resume=resume)
    click.echo(outcome.summary())


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
        f"centralized {cfg.model.name} on {cfg.data.dataset}: held-out accuracy {result.accuracy:.4f}, "
        f"loss {result.loss:.4f}"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option(
    "--tracking-uri",
    default=run_config.RunConfig.mlflow_tracking_uri,
    show_default=True,
    help="MLflow tracking URI to read runs from.",
)
@click.option("--mlflow-ui", default=None, help="Base URL of the MLflow UI, for links to it.")
def dashboard(host: str, port: int, tracking_uri: str, mlflow_ui: str | None) -> None:
    """Serve the monitoring dashboard: runs, their rounds, clients, privacy and health."""
    from fedpipe.dashboard import app

    click.echo(f"fedpipe dashboard on http://{host}:{port} (tracking {tracking_uri})")
    app.serve(host, port, tracking_uri, mlflow_ui)


@main.command(name="compile")
@config_option
@set_option
@click.option("--rounds", type=int, default=None, help="Rounds to unroll (default: the config's).")
@click.option("--image", default=None, help="Runtime image for every component.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="federated_training.yaml")
def compile_command(
    config_path: str | None,
    sets: tuple[str, ...],
    rounds: int | None,
    image: str | None,
    output: str,
) -> None:
    """Write the pipeline as KFP IR YAML, ready to upload to Kubeflow Pipelines."""
    from fedpipe.ops import compilation

    cfg = _load_config(config_path, sets, local=False, rounds=rounds)
    if cfg.tracking.uri.startswith("sqlite:"):
        click.echo(
            f"warning: mlflow_tracking_uri {cfg.tracking.uri} is a local file; on a "
            "cluster every pod would get its own database. Pass --set "
            "mlflow_tracking_uri=http://<your MLflow server> for a cluster run.",
            err=True,
        )
    compilation.compile_pipeline(cfg, Path(output), image=image)
    click.echo(f"wrote {output}: {cfg.training.rounds} rounds, config_json defaults to this config")


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


@experiment.command(name="privacy-utility")
@set_option
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
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default=str(RUNS_DIR / "experiments" / "privacy-utility"),
    show_default=True,
)
def privacy_utility(
    sets: tuple[str, ...], noise_multipliers: tuple[float, ...], clip_norm: float, output: str
) -> None:
    """Held-out accuracy against epsilon for a few noise multipliers (DP-FedAvg)."""
    from fedpipe.experiments import privacy_utility as experiment_module

    try:
        base = run_config.load(None, {**experiment_module.DEFAULTS, **_parse_sets(sets)})
        base = run_config.resolve_local_paths(base, Path.cwd())
    except run_config.ConfigError as e:
        raise click.UsageError(str(e)) from e
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
    type=click.Choice(run_config.SELECTION_POLICIES),
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
        policies=policies or run_config.SELECTION_POLICIES,
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
@set_option
@click.option(
    "--defences",
    default=None,
    help="Comma-separated subset of the defences, e.g. fedavg,median (default: all).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    default=str(RUNS_DIR / "experiments" / "robustness"),
)
def robustness(sets: tuple[str, ...], defences: str | None, output: str) -> None:
    """Accuracy of each aggregator under each attack at 0, 10 and 30% attackers, on the
    experiment's non-IID MNIST setting (--set overrides any of its fields)."""
    from fedpipe.experiments import robustness as experiment_module

    try:
        base = run_config.resolve_local_paths(
            run_config.load(None, {**experiment_module.SETTINGS, **_parse_sets(sets)}), Path.cwd()
        )
    except run_config.ConfigError as e:
        raise click.UsageError(str(e)) from e
    names = tuple(defences.split(",")) if defences else experiment_module.DEFENCES
    cells = experiment_module.run(base, names)
    paths = experiment_module.write(cells, base, Path(output))
    click.echo(experiment_module.to_markdown(cells))
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@experiment.command(name="self-healing")
@set_option
@click.option("--crash-rate", type=float, default=0.2, show_default=True, help="Task crashes.")
@click.option("--crash-round", type=int, default=3, show_default=True, help="Run crashes here.")
@click.option("--retries", type=int, default=2, show_default=True, help="Retries per task.")
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default=str(RUNS_DIR / "experiments" / "self-healing"),
    show_default=True,
)
def self_healing(
    sets: tuple[str, ...], crash_rate: float, crash_round: int, retries: int, output: str
) -> None:
    """A fault-free and a faulty pipeline run of the same task (kfp.local): recovery time
    per fault, wall-time ratio, final accuracy of both."""
    from fedpipe.experiments import self_healing as experiment_module

    try:
        base = run_config.load(None, {**experiment_module.DEFAULTS, **_parse_sets(sets)})
        base = run_config.resolve_local_paths(base, Path.cwd())
        experiment_module.faulty(base, crash_rate, crash_round, retries)  # refuse bad values now
    except run_config.ConfigError as e:
        raise click.UsageError(str(e)) from e
    experiment_module.run(base, crash_rate, crash_round, retries, Path(output))
    click.echo((Path(output) / "table.md").read_text())
