"""The local CDF's Files, data sets, auth, sessions, faults and persistence, through the real cognite-sdk."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cognite.client.data_classes import DataSetWrite, FileMetadataUpdate, FileMetadataWrite as FileMetadata
from cognite.client.exceptions import CogniteDuplicatedError, CogniteNotFoundError

from akerbp.mlops.local_cdf import LocalCDF
from support import fault_rules, inject_faults


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def api(cdf, path, body=None, method="POST", token="t", raw=None, headers=None, project="test"):
    url = f"{cdf.base_url}/api/v1/projects/{project}{path}"
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    hdrs.update(headers or {})
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    return requests.request(method, url, data=data, headers={"Content-Type": "application/json", **hdrs})


# -- files ------------------------------------------------------------------------------------------------
def test_upload_bytes_round_trip_1kb(client):
    content = os.urandom(1024)
    created = client.files.upload_bytes(content, name="a.bin", external_id="a", metadata={"k": "v"})
    assert client.files.retrieve(id=created.id).uploaded
    assert sha(client.files.download_bytes(external_id="a")) == sha(content)


def test_upload_path_10mb_round_trip(client, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(10 * 1024 * 1024))
    client.files.upload(str(path), external_id="big", name="big.bin")
    target = tmp_path / "out"
    target.mkdir()
    client.files.download(str(target), external_id="big")
    assert sha((target / "big.bin").read_bytes()) == sha(path.read_bytes())


def test_multipart_upload_of_three_parts(client):
    parts = [os.urandom(300_000), os.urandom(200_000), os.urandom(5)]
    with client.files.multipart_upload_session(name="m.bin", parts=3, external_id="m") as session:
        for i, part in enumerate(parts):
            session.upload_part(i, part)
    assert client.files.retrieve(external_id="m").uploaded
    assert sha(client.files.download_bytes(external_id="m")) == sha(b"".join(parts))


def test_incomplete_multipart_upload_is_not_uploaded(local_cdf, client):
    init = api(local_cdf, "/files/initmultipartupload?parts=2", {"name": "m.bin", "externalId": "m"}).json()
    assert requests.put(init["uploadUrls"][0], data=b"only the first part").status_code == 200
    assert client.files.retrieve(external_id="m").uploaded is False
    response = api(local_cdf, "/files/completemultipartupload", {"externalId": "m", "uploadId": init["uploadId"]})
    assert response.status_code == 400 and "parts [1]" in response.json()["error"]["message"]


def test_duplicate_external_id_is_409_and_overwrite_replaces(client):
    client.files.upload_bytes(b"one", name="x", external_id="x")
    with pytest.raises(CogniteDuplicatedError) as err:
        client.files.upload_bytes(b"two", name="x", external_id="x")
    assert err.value.duplicated == [{"externalId": "x"}]
    client.files.upload_bytes(b"three", name="x", external_id="x", overwrite=True)
    assert client.files.download_bytes(external_id="x") == b"three"
    assert len(client.files.list(external_id_prefix="x")) == 1


def test_list_paginates_past_1000_with_filters(local_cdf, client):
    def create(i):
        client.files.create(FileMetadata(name=f"f{i}", external_id=f"page/{i:05d}", metadata={"even": str(i % 2 == 0)}))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(1105)))
    client.files.create(FileMetadata(name="other", external_id="other/1"))
    listed = client.files.list(external_id_prefix="page/", limit=None)
    assert sorted(f.external_id for f in listed) == [f"page/{i:05d}" for i in range(1105)]
    assert len(client.files.list(metadata={"even": "True"}, limit=None)) == 553
    assert len(client.files.list(uploaded=False, limit=None)) == 1106
    first = api(local_cdf, "/files/list", {"limit": 1000, "filter": {"externalIdPrefix": "page/"}}).json()
    assert len(first["items"]) == 1000 and first["nextCursor"]
    rest = api(local_cdf, "/files/list", {"limit": 1000, "cursor": first["nextCursor"],
                                          "filter": {"externalIdPrefix": "page/"}}).json()
    assert len(rest["items"]) == 105 and rest["nextCursor"] is None
    partitioned = client.files.list(external_id_prefix="page/", limit=None, partitions=3)
    assert len({f.id for f in partitioned}) == 1105


def test_list_filters_directory_mime_time_and_data_set(client):
    ds = client.data_sets.create(DataSetWrite(external_id="mlops", name="mlops"))
    client.files.upload_bytes(b"1", name="a.csv", external_id="a", directory="/mlops/x", mime_type="text/csv",
                              data_set_id=ds.id)
    client.files.upload_bytes(b"2", name="b.txt", external_id="b", directory="/other")
    assert [f.external_id for f in client.files.list(directory_prefix="/mlops")] == ["a"]
    assert [f.external_id for f in client.files.list(mime_type="text/csv")] == ["a"]
    assert [f.external_id for f in client.files.list(data_set_external_ids=["mlops"])] == ["a"]
    assert [f.external_id for f in client.files.list(name="b.txt")] == ["b"]
    a = client.files.retrieve(external_id="a")
    assert [f.external_id for f in client.files.list(created_time={"max": a.created_time})] == ["a"]


def test_byids_ignore_unknown_and_missing(client):
    client.files.upload_bytes(b"1", name="a", external_id="a")
    assert client.files.retrieve(external_id="nope") is None
    assert [f.external_id for f in client.files.retrieve_multiple(external_ids=["a", "nope"],
                                                                  ignore_unknown_ids=True)] == ["a"]
    with pytest.raises(CogniteNotFoundError) as err:
        client.files.retrieve_multiple(external_ids=["a", "nope"])
    assert err.value.not_found == [{"externalId": "nope"}]


def test_update_metadata_and_fields_then_delete(client):
    client.files.upload_bytes(b"1", name="a", external_id="a", metadata={"k": "v", "gone": "x"})
    client.files.update(FileMetadataUpdate(external_id="a").metadata.add({"n": "1"}).metadata.remove(["gone"])
                        .source.set("lab"))
    updated = client.files.retrieve(external_id="a")
    assert updated.metadata == {"k": "v", "n": "1"} and updated.source == "lab"
    client.files.update(FileMetadataUpdate(external_id="a").metadata.set({"only": "this"}))
    assert client.files.retrieve(external_id="a").metadata == {"only": "this"}
    client.files.delete(external_id="a")
    assert client.files.retrieve(external_id="a") is None


def test_data_sets(client):
    created = client.data_sets.create(DataSetWrite(external_id="d", name="D", metadata={"a": "b"}))
    assert client.data_sets.retrieve(external_id="d").id == created.id
    assert [d.external_id for d in client.data_sets.list()] == ["d"]
    with pytest.raises(CogniteDuplicatedError):
        client.data_sets.create(DataSetWrite(external_id="d", name="again"))


def test_projects_are_separate_namespaces(local_cdf):
    test, prod = local_cdf.client(project="test"), local_cdf.client(project="prod")
    test.files.upload_bytes(b"t", name="a", external_id="a")
    assert prod.files.retrieve(external_id="a") is None
    prod.files.upload_bytes(b"p", name="a", external_id="a")
    assert test.files.download_bytes(external_id="a") == b"t"


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/files/list", {"filter": {"nmae": "x"}}, "filter.nmae"),
        ("/files/list", {"limit": "ten"}, "limit"),
        ("/files/list", {"limit": 5000}, "limit"),
        ("/files/byids", {"items": [{"id": "one"}]}, "items[0].id"),
        ("/files/byids", {"items": [{"idd": 1}]}, "items[0]"),
        ("/files/byids", {"items": "x"}, "items"),
        ("/files", {"name": 5}, "name"),
        ("/files", {"name": "a", "colour": "red"}, "colour"),
        ("/files", {"externalId": "a"}, "name"),
        ("/files", {"name": "a", "metadata": {"k": 1}}, "metadata.k"),
        ("/files", {"name": "a", "metadata": {"k" * 200: "v"}}, "metadata"),
        ("/files/update", {"items": [{"id": 1, "update": {"colour": {"set": "x"}}}]}, "items[0].update.colour"),
        ("/functions", {"items": [{"name": "f", "fileId": 1, "runtime": "py27"}]}, "items[0].runtime"),
        ("/functions", {"items": [{"name": "f", "fileId": 1, "secrets": {"BAD_KEY": "x"}}]}, "items[0].secrets"),
        ("/functions", {"items": [{"name": "f", "fileId": 1, "metadata": {str(i): "v" for i in range(17)}}]},
         "items[0].metadata"),
        ("/functions/schedules", {"items": [{"name": "s", "cronExpression": "not cron", "functionId": 1}]},
         "items[0].cronExpression"),
        ("/events", {"items": [{"type": 5}]}, "items[0].type"),
    ],
)
def test_bad_input_is_400_naming_the_field(local_cdf, path, body, field):
    response = api(local_cdf, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == 400 and field in error["message"]
    assert response.headers["x-request-id"]


def test_malformed_json_and_bad_gzip_are_400(local_cdf):
    response = api(local_cdf, "/files/list", raw=b"{not json")
    assert response.status_code == 400 and "Malformed JSON" in response.json()["error"]["message"]
    response = api(local_cdf, "/files/list", raw=b"plain", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["error"]["message"]
    good = api(local_cdf, "/files/list", raw=gzip.compress(b'{"limit": 1}'), headers={"Content-Encoding": "gzip"})
    assert good.status_code == 200


def test_unknown_route_is_404_in_envelope(local_cdf):
    response = api(local_cdf, "/assets/list", {})
    assert response.status_code == 404 and response.json()["error"]["code"] == 404


# -- auth and sessions --------------------------------------------------------------------------------------
def test_requests_need_a_bearer_token(local_cdf):
    response = api(local_cdf, "/files/list", {}, token=None)
    assert response.status_code == 401 and "bearer" in response.json()["error"]["message"].lower()


def test_oauth_client_credentials_and_restricted_mode(tmp_path):
    from cognite.client import ClientConfig, CogniteClient
    from cognite.client.credentials import OAuthClientCredentials
    from cognite.client.exceptions import CogniteAuthError

    with LocalCDF(tmp_path / "cdf", clients={"app": "s3cret-value"}) as cdf:
        def client(secret):
            creds = OAuthClientCredentials(token_url=cdf.token_url, client_id="app", client_secret=secret,
                                           scopes=["x"])
            return CogniteClient(ClientConfig(client_name="t", project="p", base_url=cdf.base_url, credentials=creds))

        assert client("s3cret-value").files.list() is not None
        with pytest.raises(CogniteAuthError):
            client("wrong").files.list()
        assert api(cdf, "/files/list", {}, token="made-up").status_code == 401
        assert cdf.client(project="p").files.list() is not None  # issues itself a valid token


def test_token_inspect(local_cdf, client):
    client.files.upload_bytes(b"1", name="a", external_id="a")
    inspected = client.iam.token.inspect()
    assert "test" in [p.url_name for p in inspected.projects]


def test_sessions_create_list_revoke(client):
    from cognite.client.data_classes.iam import ClientCredentials

    session = client.iam.sessions.create(ClientCredentials("id", "secret"))
    assert session.status == "READY" and session.nonce
    assert session.id in [s.id for s in client.iam.sessions.list(status="READY")]
    client.iam.sessions.revoke(session.id)
    assert client.iam.sessions.retrieve(session.id).status == "REVOKED"


# -- faults, persistence, several processes -------------------------------------------------------------------
def test_injected_503s_are_retried_by_the_sdk(local_cdf, client):
    client.files.upload_bytes(b"1", name="a", external_id="a")
    added = inject_faults(local_cdf.base_url, [{"path": "/files/byids", "status": 503, "count": 3}])
    assert added[0]["count"] == 3
    assert client.files.retrieve(external_id="a").external_id == "a"
    rules = fault_rules(local_cdf.base_url)
    assert rules[0]["count"] == 0 and rules[0]["hits"] == 3


def test_state_survives_restart(tmp_path):
    with LocalCDF(tmp_path / "cdf") as cdf:
        cdf.client(project="p").files.upload_bytes(b"kept", name="a", external_id="a", metadata={"v": "1"})
    with LocalCDF(tmp_path / "cdf") as cdf:
        client = cdf.client(project="p")
        assert client.files.download_bytes(external_id="a") == b"kept"
        assert client.files.retrieve(external_id="a").metadata == {"v": "1"}


WRITER = """
import sys
from akerbp.mlops.local_cdf import LocalCDF
with LocalCDF(sys.argv[1]) as cdf:
    client = cdf.client(project="p")
    for i in range(40):
        client.files.upload_bytes(f"{sys.argv[2]}-{i}".encode(), name="x", external_id=f"{sys.argv[2]}/{i}")
"""


def test_two_processes_writing_one_data_dir_lose_nothing(tmp_path):
    data_dir = tmp_path / "cdf"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), name]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with LocalCDF(data_dir) as cdf:
        client = cdf.client(project="p")
        files = client.files.list(limit=None)
        assert len(files) == 80 and len({f.id for f in files}) == 80
        assert client.files.download_bytes(external_id="b/39") == b"b-39"


def test_upload_url_needs_its_signature(local_cdf, client):
    created, url = client.files.create(FileMetadata(name="a", external_id="a"))
    tampered = url.replace("sig=", "sig=0")
    assert requests.put(tampered, data=b"x").status_code == 403
    assert requests.put(url, data=b"x").status_code == 200
    assert client.files.download_bytes(external_id="a") == b"x"


OPENER = "import sys; from akerbp.mlops.local_cdf.store import Store; print(Store(sys.argv[1]).secret)"


def test_processes_opening_a_new_data_dir_at_once_all_succeed(tmp_path):
    """Each CLI call may start its own embedded server: the first opening of a data dir must not race."""
    for round_ in range(3):
        data_dir = tmp_path / f"cdf{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(data_dir)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 8, [err for _, err in outputs if err]
        assert len({out.strip() for out, _ in outputs}) == 1  # one signing secret, created once


def test_announce_records_restricted_and_server_info_returns_the_record(tmp_path):
    with LocalCDF(tmp_path / "open") as open_cdf, LocalCDF(tmp_path / "closed", clients={"app": "s"}) as closed:
        open_cdf.announce()
        closed.announce(note="extra keys are kept")
        assert LocalCDF.server_info(tmp_path / "open")["restricted"] is False
        info = LocalCDF.server_info(tmp_path / "closed")
        assert (info["restricted"], info["note"], info["base_url"], info["pid"]) == (
            True, "extra keys are kept", closed.base_url, os.getpid())
        assert LocalCDF.running(tmp_path / "closed") == closed.base_url
        closed.withdraw()
        assert LocalCDF.server_info(tmp_path / "closed") is None and LocalCDF.running(tmp_path / "closed") is None
    assert LocalCDF.server_info(tmp_path / "open") is None  # announced but no longer answering
