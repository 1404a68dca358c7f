"""The monitoring dashboard: a Starlette app with server-rendered pages.

`/` lists the runs; `/runs/<id>` shows one run; `/api/runs/<id>` is the JSON the run page
polls while the run is RUNNING, carrying the same figures and SVG charts the page shows.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fedpipe.dashboard import agents, runs
from fedpipe.dashboard.charts import NO_DATA, Reference, Series, line_chart

HERE = Path(__file__).parent
REFRESH_MS = 2000


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _privacy(detail: runs.RunDetail) -> str:
    spent = detail.last(runs.EPSILON)
    if detail.dp_delta is None:
        return "no DP"
    target = f" of target {detail.target_epsilon:g}" if detail.target_epsilon else ""
    eps = "∞ (no noise)" if spent is None else f"{spent:.3g}"
    return f"ε = {eps}{target}, δ = {detail.dp_delta:g}"


WITHHELD = "withheld under DP: no client-level figure is released"


def _withheld(detail: runs.RunDetail) -> bool:
    """A DP run's client counts exist but are not released: not "0 accepted"."""
    return detail.dp_delta is not None and runs.ACCEPTED not in detail.series


def run_view(detail: runs.RunDetail) -> dict:
    """The run page's live figures and charts (page render and JSON refresh alike)."""
    row, s = detail.row, detail.series
    planned = f" / {row.rounds_planned}" if row.rounds_planned else ""
    health = detail.health_totals()
    withheld = _withheld(detail)
    fields = {
        "status": row.status,
        "rounds": f"{row.rounds_done}{planned}",
        "accuracy": _number(row.accuracy),
        "loss": _number(detail.last(runs.LOSS)),
        "clients": WITHHELD
        if withheld
        else (
            f"{int(detail.last(runs.ACCEPTED) or 0)} accepted, "
            f"{int(detail.last(runs.REJECTED) or 0)} rejected"
        ),
        "privacy": _privacy(detail),
        "health": (
            f"{int(health['tasks_retried'])} tasks retried "
            f"({int(health['failed_attempts'])} failed attempts), "
            f"{int(health['clients_lost'])} clients lost, {int(health['faults'])} faults, "
            f"{health['time_lost_s']:.1f}s lost to recovery"
        ),
    }
    target_acc = detail.target_accuracy
    charts = {
        "accuracy": line_chart(
            "Held-out accuracy",
            [Series("accuracy", s[runs.ACCURACY])],
            reference=Reference("target", target_acc) if target_acc else None,
            y_min=0.0,
            y_max=1.0,
        ),
        "loss": line_chart("Held-out loss", [Series("loss", s[runs.LOSS])], y_min=0.0),
        "participation": line_chart(
            "Client participation",
            [Series("accepted", s[runs.ACCEPTED]), Series("rejected", s[runs.REJECTED])],
            y_min=0.0,
            empty=WITHHELD if withheld else NO_DATA,
        ),
        "privacy": line_chart(
            "Privacy budget spent (ε)",
            [Series("ε", s[runs.EPSILON])],
            reference=Reference("target ε", detail.target_epsilon)
            if detail.target_epsilon
            else None,
            y_min=0.0,
        ),
        "health": line_chart(
            "Round health",
            [
                Series(name.removeprefix(runs.HEALTH_PREFIX).replace("_", " "), s[name])
                for name in ("health/tasks_retried", "health/clients_lost", "health/faults")
            ],
            y_min=0.0,
        ),
    }
    return {"running": detail.running, "fields": fields, "charts": charts}


def create_app(
    tracking_uri: str, mlflow_ui: str | None = None, agent_source: agents.AgentSource | None = None
) -> Starlette:
    """The dashboard over one tracking server; `mlflow_ui` is the MLflow UI's base URL
    (links are left out without it); `agent_source` feeds the agents section."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    ui = mlflow_ui.rstrip("/") if mlflow_ui else None

    def run_link(row: runs.RunRow) -> str | None:
        return f"{ui}/#/experiments/{row.experiment_id}/runs/{row.run_id}" if ui else None

    def version_link(version: runs.Version) -> str | None:
        return f"{ui}/#/models/{version.model_name}/versions/{version.version}" if ui else None

    async def index(request: Request) -> Response:
        return templates.TemplateResponse(
            request,
            "runs.html",
            {
                "runs": runs.list_runs(client),
                "agents": agents.agent_rows(agent_source),
                "agents_configured": agent_source is not None,
                "tracking_uri": tracking_uri,
                "started": _started,
                "number": _number,
            },
        )

    async def run_page(request: Request) -> Response:
        detail = runs.run_detail(client, request.path_params["run_id"])
        return templates.TemplateResponse(
            request,
            "run.html",
            {
                "detail": detail,
                "view": run_view(detail),
                "run_link": run_link(detail.row),
                "version_link": version_link,
                "refresh_ms": REFRESH_MS,
                "started": _started,
            },
        )

    async def run_json(request: Request) -> Response:
        return JSONResponse(run_view(runs.run_detail(client, request.path_params["run_id"])))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/runs/{run_id}", run_page),
            Route("/api/runs/{run_id}", run_json),
            Route("/healthz", healthz),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
    )


def _started(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def serve(host: str, port: int, tracking_uri: str, mlflow_ui: str | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(tracking_uri, mlflow_ui), host=host, port=port, log_level="warning")
