"""The agents' CLI commands (`fedpipe certs`, `fedpipe coordinator`, `fedpipe agent`,
`fedpipe agents ...`), added to the main `fedpipe` group."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

tls_options = [
    click.option("--cert", required=True, type=click.Path(exists=True, dir_okay=False)),
    click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False)),
    click.option("--ca", required=True, type=click.Path(exists=True, dir_okay=False)),
]


def _with_tls(f):
    for option in reversed(tls_options):
        f = option(f)
    return f


def _log_to(stream_name: str, state_dir: str | None, file_name: str) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if state_dir:
        Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        handlers.append(logging.FileHandler(Path(state_dir) / file_name))
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {stream_name} %(levelname)s %(message)s",
        handlers=handlers,
    )


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--clients", required=True, type=click.IntRange(1), help="Client certificates.")
@click.option(
    "--coordinator-host",
    "hosts",
    multiple=True,
    default=("127.0.0.1",),
    show_default=True,
    help="Host name or IP the coordinator's certificate is valid for (repeatable).",
)
def certs(out: str, clients: int, hosts: tuple[str, ...]) -> None:
    """Create a federation: CA, coordinator, orchestrator and one certificate per client."""
    from fedpipe.agents import provisioning

    layout = provisioning.provision(out, clients, hosts)
    click.echo(
        f"wrote {layout.ca_cert} (give to everyone), coordinator.pem/.key, "
        f"orchestrator.pem/.key (the pipeline's tasks) and client-0 .. client-{clients - 1} "
        f".pem/.key to {layout.root}; keep ca.key offline"
    )


@click.command()
@click.option("--port", required=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@_with_tls
@click.option("--state-dir", type=click.Path(file_okay=False), help="Replay state and log.")
@click.option("--heartbeat-interval", type=float, default=1.0, show_default=True)
@click.option("--heartbeat-timeout", type=float, default=15.0, show_default=True)
def coordinator(
    port: int,
    host: str,
    cert: str,
    key: str,
    ca: str,
    state_dir: str | None,
    heartbeat_interval: float,
    heartbeat_timeout: float,
) -> None:
    """Run the coordinator over mutual TLS until SIGTERM/SIGINT."""
    from fedpipe.agents import coordinator as service
    from fedpipe.agents import local

    local.die_with_launcher()
    _log_to("coordinator", state_dir, "coordinator.log")
    server, coordinator, bound = service.serve(
        port,
        cert,
        key,
        ca,
        host=host,
        state_dir=state_dir,
        heartbeat_interval_s=heartbeat_interval,
        heartbeat_timeout_s=heartbeat_timeout,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"coordinator ready on {host}:{bound}", err=True)
    stop.wait()
    server.stop(grace=2).wait()
    coordinator.close()


@click.command()
@click.option(
    "--data",
    required=True,
    help="This owner's data: a folder, or an s3://bucket/prefix or gs://bucket/prefix read "
    "with this process's own credentials (environment) and cached, verified, under "
    "--state-dir. The folder holds data.npz (x, y) or MNIST-style IDX files.",
)
@click.option("--coordinator", "address", required=True, metavar="HOST:PORT")
@_with_tls
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Secrets and protocol state (0700); default ~/.fedpipe-agent.",
)
def agent(data: str, address: str, cert: str, key: str, ca: str, state_dir: str | None) -> None:
    """Run a client agent next to its data: dial out, register, answer round tasks."""
    from fedpipe.agents import agent as agent_module
    from fedpipe.agents import local

    local.die_with_launcher()
    _log_to("agent", state_dir, "agent.log")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    agent_module.run(data, address, cert, key, ca, state_dir)


@click.group()
def agents() -> None:
    """Data folders for demo agents, and the coordinator's view of the agents."""


@agents.command(name="prepare-data")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE")
@click.option("--out", required=True, type=click.Path(file_okay=False))
def prepare_data(config_path: str | None, sets: tuple[str, ...], out: str) -> None:
    """Write each client's partition of the config's dataset to OUT/client-<i>/data.npz."""
    from fedpipe.agents import data_folder
    from fedpipe.cli import _load_config

    folders = data_folder.prepare(_load_config(config_path, sets), out)
    click.echo(f"wrote {len(folders)} data folders under {out}")


@agents.command(name="status")
@click.option("--coordinator", "address", required=True, metavar="HOST:PORT")
@click.option("--tls-dir", required=True, type=click.Path(exists=True, file_okay=False))
def status(address: str, tls_dir: str) -> None:
    """The agents the coordinator knows: online, last heartbeat, rounds served, failures."""
    from fedpipe.agents import remote_clients

    for a in remote_clients.RemoteClients(address, tls_dir).status():
        click.echo(
            f"client {a.client_id}: {'online' if a.online else 'offline'}, last heartbeat "
            f"{a.last_heartbeat:.0f}, rounds served {a.rounds_served}, failures {a.failures}, "
            f"refused messages {a.refused_messages}"
        )


@agents.command(name="demo")
@click.option("--clients", type=click.IntRange(2), default=3, show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True)
@click.option(
    "--engine",
    type=click.Choice(["simulate", "kfp"]),
    default="simulate",
    show_default=True,
    help="simulate: the stages in-process; kfp: the compiled pipeline through kfp.local.",
)
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/agents-demo")
def demo(clients: int, rounds: int, engine: str, sets: tuple[str, ...], workdir: str) -> None:
    """A coordinator and one agent per client on 127.0.0.1, each with its own data folder,
    and the rounds driven by the pipeline with SecAgg+ on."""
    from fedpipe.agents import data_folder
    from fedpipe.agents.local import LocalFederation
    from fedpipe.cli import _load_config

    base = _load_config(
        None,
        sets,
        extra={
            "data.num_clients": clients,
            "selection.cohort_size": clients,
            "training.rounds": rounds,
            "aggregation.secure.mode": "secagg+",
        },
    )
    root = Path(workdir).resolve()
    owners = data_folder.prepare(base, root / "owners")
    with LocalFederation(root / "federation", clients) as fed:
        fed.start(owners, timeout_s=300)
        click.echo(f"coordinator {fed.address}, {clients} agents online; logs in {fed.root}")
        given = any(s.startswith("clients.task_timeout_s=") for s in sets)
        config = base.replace(fed.run_config(base.clients.task_timeout_s if given else 600.0))
        if engine == "kfp":
            from fedpipe.ops import local_run

            click.echo(local_run.run_pipeline(config, root / "pipeline_root").summary())
        else:
            from fedpipe.simulation.runner import simulate

            result = simulate(config, root / "simulation", register=False)
            click.echo("accuracy per round: " + ", ".join(f"{a:.3f}" for a in result.accuracy))


COMMANDS = (certs, coordinator, agent, agents)
