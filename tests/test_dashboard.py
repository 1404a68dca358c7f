"""The dashboard in a real headless browser (Debian's chromium, driven by playwright),
against a real dashboard server process reading MLflow."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fedpipe.dashboard import agents, charts, runs
from fedpipe.simulation.runner import simulate

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_S = 180  # importing MLflow on a loaded 2-core machine

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(mlflow_uri, tmp_path):
    """`fedpipe dashboard` as its own process on a free loopback port; yields its URL."""
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from fedpipe.cli import main; main(sys.argv[1:])",
            "dashboard",
            "--port",
            str(port),
            "--tracking-uri",
            mlflow_uri,
            "--mlflow-ui",
            "http://127.0.0.1:5000",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        f"dashboard did not start:\n{(tmp_path / 'dashboard.log').read_text()}"
                    )
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            tab = context.new_page()
            tab.set_default_timeout(60_000)
            yield tab
        finally:
            browser.close()


@needs_chromium
def test_finished_run_shows_rounds_accuracy_and_charts(small_config, tmp_path, dashboard, page):
    result = simulate(small_config, tmp_path / "sim", run_name="browser-run")
    final = result.registration.accuracy

    page.goto(dashboard)
    row = page.locator(f'tr[data-run-id="{result.mlflow_run_id}"]')
    assert "FINISHED" in row.inner_text() and "3 / 3" in row.inner_text()
    row.get_by_role("link", name="browser-run").click()
    page.wait_for_url(f"**/runs/{result.mlflow_run_id}")

    assert page.locator("#rounds").inner_text() == "3 / 3"
    assert page.locator("#accuracy").inner_text() == f"{final:.4f}"
    accuracy_line = page.locator('#chart-accuracy polyline.series[data-series="accuracy"]')
    assert accuracy_line.get_attribute("data-points") == "4"  # round 0 and rounds 1..3
    assert len(accuracy_line.get_attribute("points").split()) == 4
    box = page.locator("#chart-accuracy svg").bounding_box()
    assert box["width"] > 200 and box["height"] > 80  # laid out, not an empty element
    participation = page.locator("#chart-participation polyline.series")
    assert participation.count() == 2
    assert "no DP" in page.locator('[data-field="privacy"]').inner_text()
    registration = page.locator("#registration").inner_text()
    assert "fedpipe-test version 1" in registration and "promoted to @champion" in registration
    link = page.get_by_role("link", name="open in MLflow").last
    assert link.get_attribute("href") == "http://127.0.0.1:5000/#/models/fedpipe-test/versions/1"
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@needs_chromium
def test_run_page_follows_a_running_run_without_reloading(mlflow_uri, dashboard, page):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("live")
    run_id = client.create_run(experiment, run_name="live-run").info.run_id
    client.log_param(run_id, "training.rounds", "5")
    client.log_metric(run_id, "accuracy", 0.1, step=0)

    page.goto(f"{dashboard}/runs/{run_id}")
    assert page.locator("#rounds").inner_text() == "0 / 5"
    assert page.locator('[data-field="status"]').inner_text() == "RUNNING"
    page.evaluate("window.__notReloaded = true")

    for step, accuracy in ((1, 0.5), (2, 0.7), (3, 0.8)):
        client.log_metric(run_id, "accuracy", accuracy, step=step)
        client.log_metric(run_id, "clients_accepted", 4, step=step)
        page.wait_for_function(
            f"document.getElementById('rounds').textContent === '{step} / 5'", timeout=60_000
        )
        assert page.locator("#accuracy").inner_text() == f"{accuracy:.4f}"
        points = page.locator('#chart-accuracy polyline.series[data-series="accuracy"]')
        assert points.get_attribute("data-points") == str(step + 1)
    assert page.evaluate("window.__notReloaded === true")

    client.set_terminated(run_id)  # the page reloads once to show the final state
    page.wait_for_function("window.__notReloaded === undefined", timeout=60_000)
    page.wait_for_selector("text=FINISHED")
    assert page.locator("#live").inner_text() == ""


def test_chart_draws_one_point_per_round_and_says_when_empty():
    svg = charts.line_chart(
        "Accuracy",
        [charts.Series("accuracy", [(0, 0.1), (1, 0.6), (2, 0.8)])],
        reference=charts.Reference("target", 0.9),
        y_min=0.0,
        y_max=1.0,
    )
    assert 'data-points="3"' in svg and 'class="reference"' in svg and "target 0.9" in svg
    assert "no data yet" in charts.line_chart("Loss", [charts.Series("loss", [])])


def test_a_dp_run_says_its_client_counts_are_withheld_not_zero():
    from collections import defaultdict

    from fedpipe.dashboard.app import WITHHELD, run_view

    row = runs.RunRow("r", "0", "dp", "FINISHED", 0, 2, 2, 0.8)
    series = defaultdict(list, {runs.ACCURACY: [(1, 0.7), (2, 0.8)], runs.EPSILON: [(2, 1.5)]})
    dp = runs.RunDetail(row, series, 3.0, None, 1e-5, [])
    view = run_view(dp)
    assert view["fields"]["clients"] == WITHHELD and WITHHELD in view["charts"]["participation"]
    counted = dict(series, **{runs.ACCEPTED: [(1, 4.0)], runs.REJECTED: [(1, 1.0)]})
    plain = runs.RunDetail(row, defaultdict(list, counted), None, None, None, [])
    assert run_view(plain)["fields"]["clients"] == "4 accepted, 1 rejected"


def test_agents_section_is_empty_without_a_coordinator_and_sorted_with_one():
    assert agents.agent_rows(None) == []
    rows = [agents.AgentRow("b", True, 1.0, 3), agents.AgentRow("a", False, None, 0)]
    assert [r.agent_id for r in agents.agent_rows(lambda: rows)] == ["a", "b"]
