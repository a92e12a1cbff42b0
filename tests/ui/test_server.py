"""The dashboard's web app over real HTTP, with a Snapshot over a real local CDF (registry versions, a promotion, an
audit record, a function tagged as a live prediction service): each page and its markers, /api equal to the
Snapshot's dicts, 404/405/401/502/500, the token's three ways, headers, static files, and no secret anywhere."""
from __future__ import annotations

import json
import logging
import re
import threading
import time

import pytest
import requests

from akerbp.mlops import audit
from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.registry.promotion import promote_model
from akerbp.mlops.registry.versions import upload_new_model_version
from akerbp.mlops.ui.server import Server, make_app
from akerbp.mlops.ui.snapshot import Snapshot
from akerbp.mlops.utils.logger import mask, register_secret
from akerbp.mlops.vocabulary import ENVIRONMENTS
from support import deploy_function

SECRET = "ui-test-secret-Zq81xv"  # registered as a secret: masked wherever it would show
TOKEN = "ui-test-token-0123456789abcdef"
HANDLER = """
def handle(data):
    return data
"""
LIVE_META = {"mlops_model": "alpha", "mlops_service": "prediction", "mlops_env": "dev", "mlops_version": "2",
             "mlops_model_id": "alpha/dev/2", "mlops_hash": "0123456789abcdef0123", "mlops_git_commit": "feedc0de",
             "mlops_deployed_at": "2026-01-02T03:04:05Z", "mlops_deployed_by": "tester"}


class Served:
    """A Server in a thread, closed at the end."""

    def __init__(self, snapshot: Snapshot, token: str | None = None):
        self.server = Server(make_app(snapshot, token=token), "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = self.server.url.rstrip("/")

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=30, allow_redirects=False, **kw)

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def cdf(tmp_path_factory):
    register_secret(SECRET)
    root = tmp_path_factory.mktemp("ui")
    with LocalCDF(root / "cdf", limits=Limits(call_timeout_s=30)) as local:
        client = local.client(project="test")
        artifact = root / "artifact"
        artifact.mkdir()
        (artifact / "model.txt").write_text("weights")
        for r2 in (0.5, 0.7):
            upload_new_model_version("alpha", "dev", artifact, {"metrics": {"r2": r2, "rmse": 1 - r2},
                                                                  "note": f"trained with {SECRET}"}, client=client)
        upload_new_model_version("beta", "dev", artifact, {"metrics": {"r2": 0.9}}, client=client)
        promote_model("alpha", 2, "test", client=client)
        audit.record(client, "deploy", model="alpha", env="dev", outcome="success", started=time.time() - 3,
                     service="prediction", version=2, model_id="alpha/dev/2", code_hash=LIVE_META["mlops_hash"],
                     message="deployed by the test")
        deploy_function(client, root, HANDLER, xid="alpha-prediction-dev", metadata=LIVE_META)
        yield local, client


@pytest.fixture(scope="module")
def snapshot(cdf):
    snap = Snapshot(targets=[(cdf[1], list(ENVIRONMENTS))], min_refresh_s=3600)
    snap.load()
    yield snap
    snap.close()


@pytest.fixture(scope="module")
def app(snapshot):
    served = Served(snapshot)
    yield served
    served.close()


def page_data(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert found, "the page has no page-data script"
    return json.loads(found[1])


def as_served(data: dict) -> dict:
    """The dict as the app sends it: JSON, secrets masked."""
    return json.loads(mask(json.dumps(data)))


def without_time(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "generated_at"}


def marker(html: str, testid: str) -> str:
    """The text of the element with data-testid=testid."""
    found = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>([^<]*)<', html)
    assert found, f"no data-testid={testid!r} in the page"
    return found[1].strip()


def test_models_page_shows_the_live_versions(app, snapshot):
    response = app.get("/models")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-store"
    html = response.text
    assert 'data-testid="nav"' in html
    assert marker(html, "live-alpha-dev") == "alpha/dev/2"
    assert marker(html, "live-alpha-test") == "-"  # a version promoted there, no service
    assert marker(html, "live-beta-dev") == "-"
    assert "feedc0de" in html and "tester" in html
    assert page_data(html)["envs"] == snapshot.models()["envs"] == list(ENVIRONMENTS)


def test_model_page_has_versions_tables_a_chart_and_the_metric_selector(app, snapshot):
    html = app.get("/models/alpha").text
    assert 'data-testid="metric-chart"' in html
    assert 'data-testid="versions-dev"' in html and 'data-testid="versions-test"' in html
    assert "alpha/dev/1" in html and "alpha/test/2" in html
    assert page_data(html)["metric"] == "r2" and "rmse" in html
    chosen = page_data(app.get("/models/alpha?metric=rmse").text)
    assert chosen["metric"] == "rmse"
    served = as_served(snapshot.model("alpha", metric="rmse"))
    assert {k: chosen[k] for k in ("series", "live", "metric")} == {k: served[k] for k in ("series", "live", "metric")}


def test_history_page_has_the_chart_and_the_table(app):
    html = app.get("/history").text
    assert 'data-testid="history-chart"' in html and 'data-testid="history-table"' in html
    assert "deployed by the test" in html and "promotion" in html
    only_beta = page_data(app.get("/history?model=beta").text)
    assert only_beta["model"] == "beta" and all(e["model"] == "beta" for e in only_beta["events"])


def test_automations_page_says_how_to_register_one(app):
    html = app.get("/automations").text
    assert "mlops automations register" in html


def test_analytics_page_has_its_charts_and_says_why_they_are_empty(app, snapshot):
    html = app.get("/analytics/alpha?env=dev&since=1d").text
    assert 'data-testid="calls-chart"' in html and 'data-testid="latency-chart"' in html
    data = page_data(html)
    assert data["model"] == "alpha" and data["note"]  # no calls recorded
    assert data["note"] in html


@pytest.mark.parametrize("path, call", [
    ("/api/models.json", lambda s: s.models()),
    ("/api/models/beta.json", lambda s: s.model("beta")),
    ("/api/history.json?model=alpha", lambda s: s.history("alpha", limit=200)),
    ("/api/automations.json", lambda s: s.automations()),
    ("/api/analytics/beta.json?since=1d", lambda s: s.analytics("beta", since="1d")),
])
def test_api_is_the_snapshots_dict(app, snapshot, path, call):
    response = app.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert without_time(response.json()) == without_time(as_served(call(snapshot)))


def test_every_response_has_server_timing_and_a_self_only_csp(app):
    for path in ("/models", "/api/models.json", "/static/app.js", "/nowhere"):
        response = app.get(path)
        assert re.fullmatch(r"app;dur=\d+(\.\d+)?", response.headers["Server-Timing"]), path
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "default-src 'none'" in csp
        assert "http" not in csp and "unsafe-eval" not in csp


def test_pages_use_no_inline_script_and_no_remote_origin(app):
    html = app.get("/models/alpha").text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    for attributes, body in scripts:
        assert 'src="/static/' in attributes or 'type="application/json"' in attributes, attributes
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_static_files_come_from_the_packages(app):
    plotly = app.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and plotly.headers["Content-Type"].startswith("text/javascript")
    assert len(plotly.content) > 1_000_000 and b"plotly" in plotly.content[:2000].lower()
    again = app.get("/static/plotly.min.js", headers={"If-None-Match": plotly.headers["ETag"]})
    assert again.status_code == 304 and not again.content
    assert "Plotly.newPlot" in app.get("/static/app.js").text
    assert app.get("/static/app.css").headers["Content-Type"].startswith("text/css")
    assert app.get("/static/secrets.txt").status_code == 404


def test_root_redirects_and_head_has_no_body(app):
    root = app.get("/")
    assert root.status_code == 302 and root.headers["Location"].endswith("/models")
    head = requests.head(app.url + "/models", timeout=30)
    assert head.status_code == 200 and not head.content


def test_an_unknown_model_is_404_naming_the_known_ones(app):
    page = app.get("/models/gamma")
    assert page.status_code == 404
    assert "gamma" in page.text and "alpha" in page.text and "beta" in page.text
    api = app.get("/api/models/gamma.json")
    assert api.status_code == 404 and "gamma" in api.json()["error"]
    assert app.get("/analytics/gamma").status_code == 404
    assert app.get("/nowhere").status_code == 404


def test_bad_input_is_400(app):
    assert app.get("/history?limit=many").status_code == 400
    assert app.get("/api/history.json?limit=0").json()["status"] == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_only_get_and_head(app, method):
    for path in ("/models", "/api/models.json", "/models/alpha"):
        response = requests.request(method, app.url + path, timeout=30)
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == "GET, HEAD"


def test_no_secret_in_any_page(app):
    paths = ["/models", "/models/alpha", "/models/alpha?metric=rmse", "/history", "/automations",
             "/analytics/alpha", "/api/models.json", "/api/models/alpha.json", "/api/history.json",
             "/api/automations.json", "/api/analytics/alpha.json", "/models/gamma"]
    for path in paths:
        assert SECRET not in app.get(path).text, path
    assert "trained with ***" in app.get("/models/alpha").text  # the version's metadata, masked


def test_a_bug_is_500_without_a_traceback():
    served = Served(None)  # type: ignore[arg-type]  # any page fails: the snapshot is missing
    try:
        page = served.get("/models")
        assert page.status_code == 500
        assert "Traceback" not in page.text and "AttributeError" not in page.text
        assert "MLOPS_LOG_LEVEL=DEBUG" in page.text
        assert served.get("/api/models.json").json()["status"] == 500
    finally:
        served.close()


def test_a_cdf_that_cannot_be_read_is_502(tmp_path):
    from cognite.client import global_config

    saved = global_config.max_retries, global_config.max_retries_connect
    global_config.max_retries = global_config.max_retries_connect = 0  # fail at once, not after the SDK's backoff
    local = LocalCDF(tmp_path / "gone").start()
    snap = Snapshot(targets=[(local.client(project="test"), ["dev"])], min_refresh_s=0)
    served = None
    try:
        snap.load()
        base_url = local.base_url
        local.stop()
        served = Served(snap)
        page = served.get("/models")
        assert page.status_code == 502, page.text[:500]
        assert base_url.split("//")[1].split("/")[0] in page.text  # which CDF
        assert "COGNITE_" in page.text and "local-cdf" in page.text  # what to do
        assert served.get("/api/models.json").status_code == 502
    finally:
        global_config.max_retries, global_config.max_retries_connect = saved
        if served:
            served.close()
        snap.close()
        local.stop()


@pytest.fixture(scope="module")
def guarded(snapshot):
    served = Served(snapshot, token=TOKEN)
    yield served
    served.close()


def test_with_a_token_every_request_needs_it(guarded):
    for path in ("/models", "/api/models.json", "/static/app.js", "/"):
        assert guarded.get(path).status_code == 401, path
    assert guarded.get("/models?token=wrong").status_code == 401
    assert guarded.get("/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/models", cookies={"mlops_ui_token": "wrong"}).status_code == 401


def test_the_token_in_the_url_becomes_a_cookie(guarded, caplog):
    caplog.set_level(logging.INFO, logger="akerbp.mlops")
    first = guarded.get(f"/models/alpha?metric=rmse&token={TOKEN}")
    assert first.status_code == 302
    assert first.headers["Location"] == "/models/alpha?metric=rmse"  # the token leaves the address bar
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = requests.Session()
    session.cookies.update(first.cookies)
    page = session.get(guarded.url + first.headers["Location"], timeout=30)
    assert page.status_code == 200 and page_data(page.text)["metric"] == "rmse"
    assert TOKEN not in page.text
    assert TOKEN not in caplog.text and "token=***" in caplog.text  # the request log redacts it


def test_a_bearer_token_works_for_scripts(guarded, snapshot):
    response = guarded.get("/api/models.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert without_time(response.json()) == without_time(snapshot.models())
