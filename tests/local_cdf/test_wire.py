"""What other clients than cognite-sdk 8 (cognite-toolkit, cognite-sdk 7.x, OAuth libraries) send to and read from
the local CDF: HTTP Basic client credentials, token/inspect and the project endpoints, and resource shapes as CDF
returns them (no empty objects, no fields CDF does not have), so a tool comparing CDF with its config sees no change.
"""
from __future__ import annotations

import base64
import io
import zipfile
from urllib.parse import quote_plus

import pytest
import requests
from cognite.client.data_classes.iam import ClientCredentials

from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.local_cdf.api.projects import ENV_VAR

CALL_FIELDS = {"id", "status", "startTime", "endTime", "functionId", "scheduleId", "scheduledTime", "error"}


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: each part form-urlencoded, then base64 of 'id:secret'."""
    return "Basic " + base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


def token_request(cdf, headers=None, **form):
    return requests.post(cdf.token_url, data={"grant_type": "client_credentials", **form}, headers=headers or {})


@pytest.fixture
def restricted(tmp_path):
    with LocalCDF(tmp_path / "cdf", clients={"my app": "s3:cret/+x"}) as cdf:
        yield cdf


# -- OAuth and projects ---------------------------------------------------------------------------------------
def test_token_endpoint_accepts_client_credentials_sent_with_http_basic(restricted):
    response = token_request(restricted, {"Authorization": basic("my app", "s3:cret/+x")}, scope="x")
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    listed = requests.post(f"{restricted.base_url}/api/v1/projects/p/files/list", json={},
                           headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200  # restricted mode accepts only tokens it issued: this is one


def test_a_wrong_basic_secret_is_invalid_client_with_the_scheme_to_retry(restricted):
    response = token_request(restricted, {"Authorization": basic("my app", "wrong")})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("header, form, says", [
    ("Basic not-base64!", {}, "base64"),
    ("Basic " + base64.b64encode(b"no-colon").decode(), {}, "client_id:client_secret"),
    (basic("my app", "s3:cret/+x"), {"client_id": "my app", "client_secret": "s3:cret/+x"}, "not both"),
    (basic("my app", "s3:cret/+x"), {"client_id": "other"}, "differs"),
])
def test_malformed_or_doubled_basic_credentials_are_invalid_request(restricted, header, form, says):
    response = token_request(restricted, {"Authorization": header}, **form)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert says in response.json()["error_description"]


def test_token_inspect_lists_a_declared_project_that_holds_no_data(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "from-env, other")
    with LocalCDF(tmp_path / "cdf", projects=["fresh"]) as cdf:
        # The very first request (as cognite-toolkit's): nothing has used any project yet.
        listed = [p.url_name for p in cdf.client(project="fresh").iam.token.inspect().projects]
    assert listed == ["fresh", "from-env", "other"]


def test_token_inspect_lists_a_project_once_used_even_without_data_and_after_a_restart(tmp_path):
    with LocalCDF(tmp_path / "cdf") as cdf:
        client = cdf.client(project="empty")
        assert [p.url_name for p in client.iam.token.inspect().projects] == []
        assert client.files.list() == []  # a request to the project, which stores nothing
        assert [p.url_name for p in client.iam.token.inspect().projects] == ["empty"]
    with LocalCDF(tmp_path / "cdf") as cdf:
        assert [p.url_name for p in cdf.client(project="x").iam.token.inspect().projects] == ["empty"]


def test_get_project_and_list_projects_answer(local_cdf):
    auth = {"Authorization": "Bearer t"}
    project = requests.get(f"{local_cdf.base_url}/api/v1/projects/fresh", headers=auth)
    assert project.status_code == 200
    assert project.json()["urlName"] == "fresh" and project.json()["userProfilesConfiguration"] == {"enabled": False}
    listed = requests.get(f"{local_cdf.base_url}/api/v1/projects", headers=auth, params={"withDataModelingStatus": 1})
    assert listed.json() == {"items": [{"urlName": "fresh", "dataModelingStatus": "HYBRID"}]}
    assert requests.get(f"{local_cdf.base_url}/api/v1/projects/fresh").status_code == 401  # needs a token


def test_a_client_credentials_session_names_its_client(client):
    session = client.iam.sessions.create(ClientCredentials("app-id", "secret"))
    assert session.client_id == "app-id" and session.type == "CLIENT_CREDENTIALS"


# -- resource shapes ------------------------------------------------------------------------------------------
def code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("handler.py", "def handle(data):\n    return {'got': data}\n")
    return buffer.getvalue()


def wait_ready(client, xid, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while (fn := client.functions.retrieve(external_id=xid)).status not in ("Ready", "Failed"):
        assert time.monotonic() < deadline, f"{xid} still {fn.status} after {timeout} s"
        time.sleep(0.05)
    return fn


def post(client, path: str, body: dict) -> dict:
    """The JSON a request answers, sent by the SDK's own HTTP client (auth, gzip, retries as usual)."""
    return client.post(f"/api/v1/projects/{client.config.project}{path}", json=body).json()


def raw_function(client, xid) -> dict:
    return post(client, "/functions/byids", {"items": [{"externalId": xid}]})["items"][0]


@pytest.fixture
def shaped(tmp_path):
    """One project with a function made without envVars/secrets/metadata and one made with them."""
    with LocalCDF(tmp_path / "cdf", isolation="shared-no-install", limits=Limits(call_timeout_s=60)) as cdf:
        client = cdf.client(project="t")
        file = client.files.upload_bytes(code_zip(), name="fn.zip", external_id="code")
        client.functions.create(name="bare", external_id="bare", file_id=file.id, description="", owner="")
        client.functions.create(name="full", external_id="full", file_id=file.id, env_vars={"A": "1"},
                                secrets={"key": "value"}, metadata={"m": "v"})
        yield client


def test_a_function_made_without_env_vars_secrets_or_metadata_has_none_of_them(shaped):
    bare = raw_function(shaped, "bare")
    assert not {"envVars", "secrets", "metadata", "description", "owner", "lastUpdatedTime"} & set(bare)
    assert {"id", "name", "externalId", "fileId", "functionPath", "status", "createdTime", "cpu", "memory",
            "runtime"} <= set(bare)
    full = raw_function(shaped, "full")
    assert (full["envVars"], full["secrets"], full["metadata"]) == ({"A": "1"}, {"key": "***"}, {"m": "v"})
    sdk = shaped.functions.retrieve(external_id="bare")
    assert (sdk.env_vars, sdk.secrets, sdk.metadata) == (None, None, None)


def test_a_call_has_only_the_fields_of_a_cdf_call(shaped):
    fn = wait_ready(shaped, "bare")
    call = fn.call({"x": 1})
    assert call.status == "Completed" and call.get_response() == {"got": {"x": 1}}
    raw = post(shaped, f"/functions/{fn.id}/calls/byids", {"items": [{"id": call.id}]})["items"][0]
    assert set(raw) <= CALL_FIELDS and {"id", "status", "startTime", "endTime", "functionId"} <= set(raw)
    listed = post(shaped, f"/functions/{fn.id}/calls/list", {})["items"]
    assert [set(c) <= CALL_FIELDS for c in listed] == [True]


def test_a_schedule_answers_with_function_id_but_not_function_external_id(shaped):
    fn = shaped.functions.retrieve(external_id="bare")
    created = shaped.functions.schedules.create(name="daily", cron_expression="0 8 * * *", function_external_id="bare",
                                                client_credentials=ClientCredentials("id", "secret"), data={"x": 1})
    assert (created.function_id, created.function_external_id) == (fn.id, None)
    [raw] = post(shaped, "/functions/schedules/list", {})["items"]
    assert set(raw) == {"id", "name", "functionId", "cronExpression", "sessionId", "when", "createdTime"}
    # The SDK still sends a functionExternalId filter: it selects the function's schedules.
    assert [s.id for s in shaped.functions.schedules.list(function_external_id="bare")] == [created.id]
    assert shaped.functions.schedules.list(function_external_id="full") == []
    assert shaped.functions.schedules.get_input_data(created.id) == {"x": 1}


def test_every_schedule_response_has_exactly_cdfs_fields(shaped):
    """Create, list, byids and get: the schedule's fields FunctionSchedule._load reads and CDF sends, nothing more;
    the list has no cursor (CDF's schedule list has none)."""
    fn = shaped.functions.retrieve(external_id="bare")
    created = shaped.functions.schedules.create(name="hourly", cron_expression="0 * * * *", function_id=fn.id,
                                                description="d", data={"x": 1})
    fields = {"id", "name", "functionId", "description", "cronExpression", "sessionId", "when", "createdTime"}
    listed = post(shaped, "/functions/schedules/list", {"limit": 10})
    assert set(listed) == {"items"} and [set(s) for s in listed["items"]] == [fields]
    byids = post(shaped, "/functions/schedules/byids", {"items": [{"id": created.id}]})
    assert [set(s) for s in byids["items"]] == [fields]
    one = shaped.get(f"/api/v1/projects/t/functions/schedules/{created.id}").json()
    assert set(one) == fields
    assert shaped.functions.schedules.retrieve(id=created.id).dump(camel_case=True).keys() == fields
