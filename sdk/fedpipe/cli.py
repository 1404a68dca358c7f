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
def run(config_path: str | None, sets: tuple[str, ...], pipeline_root: str) -> None:
    """Run the compiled pipeline through Kubeflow's local runner (no cluster)."""
    from fedpipe import local_run

    cfg = _load_config(config_path, sets)
    outcome = local_run.run_pipeline(cfg, Path(pipeline_root))
    click.echo(outcome.summary())


@main.command()
@config_option
@set_option
@click.option("--workdir", type=click.Path(file_okay=False), default=str(RUNS_DIR / "simulation"))
@click.option("--register/--no-register", default=True, help="Register the final model in MLflow.")
def simulate(config_path: str | None, sets: tuple[str, ...], workdir: str, register: bool) -> None:
    """Run the same rounds in-process (same stage functions, no KFP)."""
    from fedpipe.simulation import simulate as run_simulation

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
    from fedpipe.centralized import train_centralized

    cfg = _load_config(config_path, sets)
    result = train_centralized(cfg, epochs or cfg.rounds * cfg.local_epochs)
    click.echo(
        f"centralized {cfg.model} on {cfg.dataset}: held-out accuracy {result.accuracy:.4f}, "
        f"loss {result.loss:.4f}"
    )


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
    from fedpipe import compilation

    cfg = _load_config(config_path, sets, local=False, rounds=rounds)
    if cfg.mlflow_tracking_uri.startswith("sqlite:"):
        click.echo(
            f"warning: mlflow_tracking_uri {cfg.mlflow_tracking_uri} is a local file; on a "
            "cluster every pod would get its own database. Pass --set "
            "mlflow_tracking_uri=http://<your MLflow server> for a cluster run.",
            err=True,
        )
    compilation.compile_pipeline(cfg, Path(output), image=image)
    click.echo(f"wrote {output}: {cfg.rounds} rounds, config_json defaults to this config")


@main.command(name="compile-components")
@click.option("--image", default=None, help="Runtime image for every component.")
def compile_components(image: str | None) -> None:
    """Regenerate components/<stage>/component.yaml."""
    from fedpipe import compilation

    for path in compilation.compile_components(image=image):
        click.echo(f"wrote {path}")


@main.group()
def experiment() -> None:
    """Sweeps of simulated runs that answer one question each."""


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
