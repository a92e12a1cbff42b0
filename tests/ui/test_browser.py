"""`mlops ui` in a real headless Chromium (Debian's chromium, driven by playwright): every page of the
dashboard over a local CDF holding a two-model repo's history, as a person would open it.

The history is made the way a user makes it: the template's well_density (analytics on) and a small second model,
model2, deployed to dev by the deploy script; versions trained by the template's own train() (and model2's with an
r2 metric) uploaded to the registry; well_density's version 3 promoted to test and deployed there; an automation
registered with a schedule and run once for real (it trains, its gate says no); prediction calls whose analytics
rows are in RAW. Then the real CLI, `mlops ui --port 0 --no-browser --json`, serves it and one browser session loads
each page: the live versions match `mlops status`, every chart was drawn (plotly's data-rendered and a non-empty SVG
trace), the automation's next run is croniter's and its run's tasks and verdict are `mlops automations executions`',
and no page logs a console error. A screenshot of each page goes to $MLOPS_TEST_ARTIFACTS (default
test-artifacts/ui/ in the repo, gitignored). Without chromium (on PATH, or $MLOPS_TEST_CHROMIUM) the module is skipped, unless $CI is set: CI must run it (.ci/run installs both).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
from cognite.client.exceptions import CogniteAPIError

from akerbp.mlops.registry import list_model_versions, promote_model, upload_new_model_version
from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database
from support import MODEL, REPO, TESTS, Repo, Run, copy_template, mlops_command

IN_CI = bool(os.environ.get("CI"))  # read at import: the suite's autouse fixture clears CI for each test
CHROMIUM = os.environ.get("MLOPS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("MLOPS_TEST_ARTIFACTS") or REPO / "test-artifacts" / "ui")
WAIT_S = 30.0  # for a page's charts to be drawn (plotly in a headless browser on a loaded machine)
TOKEN = "browser-test-token"

try:
    from playwright.sync_api import Locator, Page, sync_playwright
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the test extra not installed
    if IN_CI:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

_MISSING = [p for p in (CHROMIUM,) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
if _MISSING and not IN_CI:
    pytest.skip(f"no headless browser: {', '.join(_MISSING)} missing (apt-get install chromium)",
                allow_module_level=True)

SETTINGS = '''
from akerbp.mlops import ModelSettings

models = [
    ModelSettings(model_name="well_density", model_file="model_code/model.py",
                  req_file="model_code/requirements.model", test_file="model_code/test_model.py",
                  artifact_folder="model_artifact", analytics={"enabled": True}),
    ModelSettings(model_name="model2", model_file="models/model2/model.py", req_file="models/model2/requirements.model",
                  test_file="models/model2/test_model.py", artifact_folder="artifacts/model2",
                  analytics={"enabled": False}),  # a client-naming handler costs ~1.4 s per worker
]
'''
MODEL2 = {  # tests/support.py's two-model repo's model, as a second model beside the template's
    "models/__init__.py": "",
    "models/common_code/__init__.py": "",
    "models/common_code/scale.py": "def scale(x, factor):\n    return x * factor\n",
    "models/model2/__init__.py": "",
    "models/model2/model.py": MODEL,
    "models/model2/test_model.py": TESTS.format(name="model2", extra=""),
    "models/model2/requirements.model": "# no requirements\n",
    "artifacts/model2/factor.json": '{"factor": 2}',
}
AUTOMATIONS = '''\
from akerbp.mlops.automations import (Automation, BuildMetric, DeploymentSpecifications, ScheduledTrigger,
    ThresholdDirection, TrainDeploy, TrainingSpecifications)

automations = [
    Automation(name="nightly", model="well_density", trigger=ScheduledTrigger(cron="{cron}"),
               action=TrainDeploy(training=TrainingSpecifications(data={{"n_samples": 300}}),
                                  deployment_condition=[BuildMetric(metric_name="r2",
                                      direction=ThresholdDirection.ABOVE, threshold={threshold})],
                                  deployment=DeploymentSpecifications(environments=["test"]))),
]
'''
CRON = "0 2 * * *"
# Above the r2 the template's train() reaches on {"n_samples": 300} (~0.81): the fixture's run of `nightly` trains a
# version, the gate says no and nothing is deployed (a second deploy to test would race the fixture's own).
R2_GATE = 0.95
# The template's train() in the repo copy, three times: three versions with their own metrics (and whatever else
# train() returns, e.g. the training statistics analytics compares the calls with).
TRAIN = '''
import json, sys
from model_code import model
print(json.dumps([model.train({"n_samples": 300, "seed": seed}, f"{sys.argv[1]}/v{seed}", {}) for seed in (1, 2, 3)]))
'''
MODEL2_R2 = (0.55, 0.72, 0.61)
CALLS = ({"GR": 60.0, "NPHI": 0.2, "DEPTH": 1900.0}, {"GR": 85.0, "NPHI": 0.25, "DEPTH": 2400.0},
         {"GR": 120.0, "NPHI": 0.35, "DEPTH": 3100.0})


@dataclass
class History:
    repo: Repo
    status: list[dict[str, Any]]  # `mlops status --json`
    versions: dict[tuple[str, str], list[Any]]  # (model, env) -> the registry's versions, oldest first
    trained: list[dict[str, Any]]  # what well_density's train() returned, per dev version
    analytics_rows: int  # well_density's rows in test's analytics table
    executions: list[dict[str, Any]]  # `mlops automations executions nightly --env test --json` after its one run


def started(repo: Repo, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(mlops_command(list(args)), cwd=repo.root, env=repo.env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, what: str, timeout: float = 300) -> Run:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{what}: exit {process.returncode}\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return Run(process.returncode, stdout, stderr)


def analytics_rows(repo: Repo, call_ids: list[int], timeout: float = 30.0) -> int:
    """The number of rows in well_density's test analytics table once the calls' rows are all there."""
    deadline, found = time.monotonic() + timeout, set()
    while time.monotonic() < deadline:
        try:
            rows = repo.client.raw.rows.list(analytics_database("test"), analytics_calls_table("well_density"),
                                             limit=None)
        except CogniteAPIError:  # no table before the recorder's first write
            rows = []
        found = {r.columns.get("call_id") for r in rows}
        if found >= set(call_ids):
            return len(rows)
        time.sleep(0.1)  # polling RAW, as a reader must: the recorder writes every 0.5 s
    raise AssertionError(f"{len(found & set(call_ids))} of {len(call_ids)} calls' rows in RAW after {timeout} s")


@pytest.fixture(scope="module", autouse=True)
def a_browser_in_ci() -> None:
    """Before any setup: with $CI set (else the module was skipped), no browser fails the tests, naming what is missing."""
    if _MISSING:
        pytest.fail(f"CI: no headless browser, {', '.join(_MISSING)} missing: .ci/run installs chromium with "
                    "apt-get (as root)")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    root = copy_template(tmp_path_factory.mktemp("ui") / "repo")
    (root / "mlops_settings.py").write_text(SETTINGS)
    for relative, text in MODEL2.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(textwrap.dedent(text))
    (root / "mlops_automations.py").write_text(AUTOMATIONS.format(cron=CRON, threshold=R2_GATE))
    repo = Repo(root, isolation="shared-no-install")
    try:
        dev = started(repo, "bash", "deploy_prediction_service.sh", "--json")  # both models, meanwhile the registry
        register = started(repo, "mlops", "automations", "register", "--env", "test", "--json")
        folders = root.parent / "trained"
        done = subprocess.run([sys.executable, "-c", TRAIN, str(folders)], cwd=root, env=repo.env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        trained = json.loads(done.stdout)
        for seed, metadata in zip((1, 2, 3), trained):
            upload_new_model_version("well_density", "dev", folders / f"v{seed}", metadata, client=repo.client)
        for r2 in MODEL2_R2:
            upload_new_model_version("model2", "dev", root / "artifacts" / "model2", {"metrics": {"r2": r2}},
                                     client=repo.client)
        promote_model("well_density", 3, "test", client=repo.client)
        test = started(repo, "bash", "deploy_prediction_service.sh", "--model", "well_density", "--json", ENV="test")
        finished(register, "automations register")
        # One real run of the schedule (after the promotion: its version is test/4), beside the deploys and calls.
        run = started(repo, "mlops", "automations", "run", "nightly", "--env", "test", "--wait", "--timeout", "240")
        for process, what in ((dev, "deploy to dev"), (test, "deploy to test")):
            finished(process, what)
        call_ids = []
        for record in CALLS:
            call = repo.client.functions.call(external_id="well_density-prediction-test", data={"data": [record]})
            assert call.status == "Completed", call.error
            call_ids.append(call.id)
        rows = analytics_rows(repo, call_ids)
        finished(run, "automations run nightly --wait")
        executions = repo.cli("automations", "executions", "nightly", "--env", "test", "--json")
        assert executions.code == 0, executions.stderr
        status = repo.cli("status", "--json")  # in this process: an interpreter's start-up less (~1.3 s of CPU)
        assert status.code == 0, status.stderr
        versions: dict[tuple[str, str], list[Any]] = {}
        for v in list_model_versions(client=repo.client):
            versions.setdefault((v.model_name, v.env), []).append(v)
        yield History(repo, status.json, versions, trained, rows, executions.json)
    finally:
        repo.close()


# --- `mlops ui`, the real CLI in a subprocess --------------------------------------------------------------------

@dataclass
class Server:
    process: subprocess.Popen
    url: str
    stderr: Path

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        return self.process.returncode


def serve(history: History, *args: str, **env: str) -> Server:
    """`mlops ui --port 0 --no-browser --json ...` in the repo, once it printed its URL."""
    log = Path(tempfile.mkstemp(prefix="mlops-ui-", suffix=".stderr")[1])
    process = subprocess.Popen(mlops_command(["mlops", "ui", "--port", "0", "--no-browser", "--json", *args]),
                               cwd=history.repo.root, env=history.repo.env(**env), stdout=subprocess.PIPE,
                               stderr=log.open("w"), text=True)
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    out = process.stdout

    def read() -> None:
        for line in out:
            lines.put(line)
        lines.put("")  # it ended

    threading.Thread(target=read, daemon=True).start()
    try:
        first = lines.get(timeout=120)  # the snapshot's first full read comes first
    except queue.Empty:
        process.kill()
        raise AssertionError(f"mlops ui printed no URL in 120 s; stderr:\n{log.read_text()[-3000:]}") from None
    if not first.strip():
        process.wait(timeout=15)
        raise AssertionError(f"mlops ui ended ({process.returncode}) without a URL:\n{log.read_text()[-3000:]}")
    return Server(process, json.loads(first)["url"], log)


@pytest.fixture(scope="module")
def ui(history: History) -> Iterator[Server]:
    server = serve(history)
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"mlops ui exited {code} on Ctrl-C:\n{server.stderr.read_text()[-3000:]}"


def page_url(server: Server, path: str, host: str | None = None) -> str:
    """`path` on the server `mlops ui` printed the URL of (at `host` instead of its host, when given)."""
    printed = urlsplit(server.url)
    return f"{printed.scheme}://{host or printed.hostname}:{printed.port}{path}"


# --- the browser --------------------------------------------------------------------------------------------------

class Browser:
    """One headless Chromium page (playwright driving the system's chromium) and what its console said."""

    def __init__(self, page: Page):
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    @property
    def url(self) -> str:
        return self.page.url

    def visit(self, url: str) -> None:
        self.errors.clear()  # what earlier pages logged is theirs
        self.page.goto(url, wait_until="load", timeout=WAIT_S * 1000)

    def element(self, testid: str) -> Locator:
        return self.page.locator(f'[data-testid="{testid}"]')

    def wait_for(self, testid: str) -> Locator:
        found = self.element(testid)
        found.first.wait_for(state="attached", timeout=WAIT_S * 1000)
        return found.first

    def rendered(self, testid: str) -> Locator:
        """The chart div once plotly drew it (data-rendered="true"), with a non-empty trace path in its SVG."""
        chart = self.page.locator(f'[data-testid="{testid}"][data-rendered="true"]')
        try:
            chart.wait_for(state="attached", timeout=WAIT_S * 1000)
        except PlaywrightTimeout:
            present = self.element(testid).count()
            raise AssertionError(f"{testid} not rendered in {WAIT_S} s on {self.url} "
                                 f"({'present' if present else 'absent'}); console: {self.errors}") from None
        paths = [p.get_attribute("d") or "" for p in chart.locator("svg .trace path").all()]
        assert any(len(d) > 8 for d in paths), f"{testid}: no trace drawn in its SVG ({paths[:5]})"
        return chart

    def traces(self, chart: Locator) -> list[dict[str, Any]]:
        """The traces plotly drew (the graph div's data), as x and y lists."""
        return chart.evaluate("el => (el.data || []).map(t => ({name: t.name || null, x: Array.from(t.x || []),"
                              " y: Array.from(t.y || [])}))")

    def no_console_errors(self) -> None:
        assert not self.errors, f"console errors on {self.url}: {self.errors}"

    def screenshot(self, name: str) -> Path:
        """The whole page as a PNG test artifact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True, timeout=WAIT_S * 1000)
        assert path.stat().st_size > 0, f"no screenshot of {self.url}"
        print(f"screenshot of {self.url}: {path}")
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, timeout=WAIT_S * 1000,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"])
        try:
            context = chromium.new_context(viewport={"width": 1400, "height": 1000})
            yield Browser(context.new_page())
        finally:
            chromium.close()


# --- one test per page --------------------------------------------------------------------------------------------

def test_models_shows_what_mlops_status_says_is_live(history: History, ui: Server, browser: Browser) -> None:
    browser.visit(page_url(ui, "/models"))
    browser.wait_for("nav")
    live = {(s["model"], s["env"]): s["model_id"] for s in history.status if s["service"] == "prediction"}
    assert set(live) == {("well_density", "dev"), ("model2", "dev"), ("well_density", "test")}, live
    for (model, env), model_id in sorted(live.items()):
        assert model_id in browser.element(f"live-{model}-{env}").inner_text(), (model, env, model_id)
    assert live["well_density", "test"] == "well_density/test/3"
    assert browser.element("live-model2-test").inner_text().strip() == "-"
    browser.no_console_errors()
    browser.screenshot("models")


def test_a_models_page_plots_its_metric_and_lists_its_versions(history: History, ui: Server,
                                                                 browser: Browser) -> None:
    browser.visit(page_url(ui, "/models/well_density"))
    chart = browser.rendered("metric-chart")
    r2 = [round(m["metrics"]["r2"], 6) for m in history.trained]
    plotted = [[round(y, 6) if isinstance(y, (int, float)) else y for y in t["y"]] for t in browser.traces(chart)]
    assert r2 in plotted, f"the dev versions' r2 {r2} is not a trace of the chart: {plotted}"
    for env in ("dev", "test"):
        rows = browser.element(f"versions-{env}").locator("tbody tr").all()
        ids = [v.model_id for v in reversed(history.versions["well_density", env])]  # newest first
        assert len(rows) == len(ids), (env, ids, [r.inner_text() for r in rows])
        for row, model_id in zip(rows, ids):
            assert model_id in row.inner_text(), (env, model_id, row.inner_text())
    browser.no_console_errors()
    browser.screenshot("model-well_density")


def test_history_charts_the_trail_and_lists_the_deploys(history: History, ui: Server, browser: Browser) -> None:
    browser.visit(page_url(ui, "/history"))
    browser.rendered("history-chart")
    rows = [[td.inner_text().strip() for td in r.locator("td").all()]
            for r in browser.element("history-table").locator("tbody tr").all()]
    for model, env in (("well_density", "dev"), ("model2", "dev"), ("well_density", "test")):
        assert any({"deploy", model, env} <= set(cells) for cells in rows), (model, env, rows)
    assert any({"promotion", "well_density", "test"} <= set(cells) for cells in rows), rows
    [run] = history.executions  # the automation's run, its audit record with what it trained and its outcome
    assert any({"automation", "well_density", "test", run["model_id"], run["outcome"]} <= set(cells)
               for cells in rows), (run, rows)
    browser.no_console_errors()
    browser.screenshot("history")


def test_automations_shows_the_schedules_next_run_and_its_run(history: History, ui: Server, browser: Browser) -> None:
    from croniter import croniter

    browser.visit(page_url(ui, "/automations"))
    cell = browser.wait_for("next-run-nightly-test").inner_text()
    shown = datetime.fromisoformat(cell.strip().replace("Z", "+00:00"))
    now = datetime.now(timezone.utc)
    expected = croniter(CRON, now - timedelta(minutes=1)).get_next(datetime)
    assert shown.tzinfo is not None and abs((shown - expected).total_seconds()) < 60, (cell, expected)

    [run] = history.executions  # the fixture's one run, as `mlops automations executions` tells it
    assert run["status"] == "completed" and run["outcome"] == "not_deployed", run
    rows = browser.element("executions-nightly-test").locator("tbody tr").all()
    assert len(rows) == 1, [r.inner_text() for r in rows]
    row = rows[0]
    assert row.locator("td.status").inner_text().strip() == run["status"], row.inner_text()
    tasks = [t.inner_text().strip() for t in row.locator(".task").all()]
    assert tasks == [f"{t['name']}: {t['status']}" for t in run["tasks"]], (tasks, run["tasks"])
    assert [t["name"] for t in run["tasks"]] == ["train", "gate", "deploy", "notify"], run["tasks"]
    [verdict] = run["verdicts"]
    assert verdict["metric"] == "r2" and verdict["met"] is False, verdict
    shown_verdicts = [v.inner_text().strip() for v in row.locator(".verdict").all()]
    assert shown_verdicts == [verdict["detail"]], (shown_verdicts, verdict)
    assert run["model_id"] and run["model_id"] in row.inner_text(), (run["model_id"], row.inner_text())
    browser.no_console_errors()
    browser.screenshot("automations")


def test_analytics_charts_calls_latency_and_drift(history: History, ui: Server, browser: Browser) -> None:
    browser.visit(page_url(ui, "/analytics/well_density?env=test&since=1d"))
    calls = browser.rendered("calls-chart")
    browser.rendered("latency-chart")
    for feature in ("GR", "NPHI", "DEPTH"):
        browser.rendered(f"drift-chart-{feature}")
    counted = [sum(y for y in t["y"] if isinstance(y, (int, float))) for t in browser.traces(calls)]
    assert history.analytics_rows in counted, f"{history.analytics_rows} calls in RAW, the chart's traces: {counted}"
    drift = browser.element("drift-chart-GR")
    if "training_features" in history.trained[-1]:  # the template's train() returns its training statistics
        names = [t["name"] or "" for t in browser.traces(drift)]
        assert any("training mean" in n and "well_density/test/3" in n for n in names), names
    else:  # the serving version's metadata has none: the chart says so
        assert "no training statistics in well_density/test/3's metadata" in drift.inner_text(), drift.inner_text()
    browser.no_console_errors()
    browser.screenshot("analytics-well_density")


def test_with_a_token_a_page_without_it_is_refused_and_with_it_loads(history: History, browser: Browser) -> None:
    server = serve(history, "--host", "0.0.0.0", MLOPS_UI_TOKEN=TOKEN)
    try:
        assert TOKEN not in server.url or server.url.endswith(f"token={TOKEN}"), server.url
        base = page_url(server, "", host="127.0.0.1")  # it listens on every interface, loopback too
        browser.page.context.clear_cookies()
        browser.visit(f"{base}/models")
        assert "401" in browser.page.locator("body").inner_text()
        assert browser.element("live-model2-dev").count() == 0
        browser.visit(f"{base}/models?token={TOKEN}")
        browser.wait_for("live-model2-dev")
        assert TOKEN not in browser.url  # the redirect took it out of the address bar
        browser.no_console_errors()
        browser.screenshot("models-with-token")
    finally:
        browser.page.context.clear_cookies()
        code = server.stop()
    assert code == 0, server.stderr.read_text()[-3000:]

