"""Hostile HTTP input to the local CDF server: its memory is bounded by its configuration, not by its input.

The server runs as `mlops local-cdf serve` in a subprocess under an address-space cap (RLIMIT_AS), so a regression
fails with a 500 or a dead server instead of eating the machine; every request has a timeout. Its peak RSS
(VmHWM) is checked at the end of the module.
"""
from __future__ import annotations

import gzip
import http.client
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from support import fault_rules, inject_faults


ADDRESS_SPACE = 1 << 30  # 1 GiB of virtual memory for the whole server process
PEAK_RSS_LIMIT = 300 << 20
MAX_JSON = 10 << 20  # the server's cap on a JSON body, as sent and decompressed
TIMEOUT = 30
SECRET = "secret-from-env-1"


class Server:
    def __init__(self, data_dir: Path, env: dict | None = None) -> None:
        env = {**os.environ, "MALLOC_ARENA_MAX": "2", "MLOPS_LOCAL_CDF_CLIENT_SECRET": SECRET, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", "serve", "--port", "0", "--data-dir",
             str(data_dir), "--client", "app", "--isolation", "shared-no-install"],
            stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE)))
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stderr], daemon=True).start()
        line = "no output within 60 s"
        try:
            line = lines.get(timeout=60)
            self.base_url = line.split(" at ")[1].split()[0]
        except (queue.Empty, IndexError):
            self.kill()
            pytest.fail(f"the server did not start: {line}")
        token = requests.post(f"{self.base_url}/oauth2/token", timeout=TIMEOUT, data={
            "grant_type": "client_credentials", "client_id": "app", "client_secret": SECRET})
        assert token.status_code == 200, token.text
        self.auth = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def api(self, path: str) -> str:
        return f"{self.base_url}/api/v1/projects/p{path}"

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return requests.post(self.api(path), json=body, headers=self.auth, timeout=TIMEOUT, **kw)

    def raw(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
            length: int | None = None) -> tuple[int, dict]:
        """A request as sent by hand (no URL normalising); `length` may claim more than `body` holds."""
        url = urlsplit(self.base_url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for key, value in {**self.auth, "Content-Type": "application/json", **(headers or {}),
                               "Content-Length": str(len(body) if length is None else length)}.items():
                conn.putheader(key, value)
            conn.endheaders()
            conn.send(body)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def moved(self, url: str) -> str:
        """A URL another server of this data dir handed out, on this server's port."""
        parts = urlsplit(url)
        return f"{self.base_url}{parts.path}?{parts.query}"

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024

    def alive(self) -> bool:
        return self.proc.poll() is None and requests.get(f"{self.base_url}/_local/health", timeout=TIMEOUT).ok

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("attacks-server") / "cdf")
    yield srv
    srv.stop()


def error(response) -> str:
    body = response if isinstance(response, dict) else response.json()
    assert set(body) == {"error"}, body
    return body["error"]["message"]


def gzip_bomb(json_prefix: bytes, blank_bytes: int, json_suffix: bytes = b"}") -> bytes:
    """Valid gzip of valid JSON: `blank_bytes` of spaces between the prefix and the suffix (about 1000:1)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [deflate.compress(json_prefix)]
    block = b" " * (16 << 20)
    for _ in range(blank_bytes // len(block)):
        out.append(deflate.compress(block))
    out += [deflate.compress(json_suffix), deflate.flush()]
    return b"".join(out)


# --- request bodies ------------------------------------------------------------------------------------------------

def test_a_gzip_bomb_is_refused_after_the_cap_not_decompressed_whole(server):
    bomb = gzip_bomb(b'{"limit": 10', 1 << 30)  # ~1 MB that inflates to 1 GiB
    assert len(bomb) < 2 << 20
    status, body = server.raw("POST", "/api/v1/projects/p/files/list", bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "decompressed" in error(body) and str(MAX_JSON) in error(body)
    assert server.alive()


def test_a_body_over_the_cap_is_refused_before_it_is_read(server):
    # Claims 1.5 GiB and sends 1 MiB: answered at once, from the Content-Length (a server reading it would hang).
    status, body = server.raw("POST", "/api/v1/projects/p/files/list", b" " * (1 << 20), length=3 << 29)
    assert status == 413 and str(MAX_JSON) in error(body)


def test_a_body_just_under_the_cap_is_served(server):
    body = b'{"limit": 10' + b" " * (MAX_JSON - 20) + b"}"
    status, answer = server.raw("POST", "/api/v1/projects/p/files/list", body)
    assert status == 200 and answer["items"] == []
    status, _ = server.raw("POST", "/api/v1/projects/p/files/list", gzip.compress(body), {"Content-Encoding": "gzip"})
    assert status == 200


def test_concurrent_large_bodies_take_turns_so_parsed_json_stays_bounded(tmp_path):
    # 10 MiB of `{}` parses to ~300 MiB of objects: six at once took a server to 936 MiB (near its 1 GiB cap).
    body = b'{"items": [' + b",".join([b"{}"] * ((MAX_JSON - 20) // 3)) + b"]}"
    srv = Server(tmp_path / "cdf")
    try:
        statuses: list = []
        threads = [threading.Thread(target=lambda: statuses.append(
            srv.raw("POST", "/api/v1/projects/p/files/byids", body)[0])) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        peak = srv.peak_rss()
        assert statuses == [400] * 6  # too many items: each was parsed and answered, in turn
        assert peak < 560 << 20, f"peak RSS {peak / (1 << 20):.0f} MiB"
    finally:
        srv.stop()


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_json_nested_too_deep_is_a_400(server, depth):
    body = b'{"items": ' + b"[" * depth + b"]" * depth + b"}"
    status, answer = server.raw("POST", "/api/v1/projects/p/files/byids", body)
    assert status == 400 and "nested too deeply" in error(answer)


# --- identifiers, URL parts and project names ------------------------------------------------------------------------

def test_an_id_beyond_2_to_the_53_is_a_400_naming_the_field(server):
    response = server.post("/files/byids", {"items": [{"id": 2**70}]})
    assert response.status_code == 400 and "items[0].id" in error(response) and str(2**53 - 1) in error(response)
    response = requests.get(server.api(f"/files/{2**70}"), headers=server.auth, timeout=TIMEOUT)
    assert response.status_code == 400 and "file_id" in error(response)
    response = server.post("/files/list", {"filter": {"dataSetIds": [{"id": 2**70}]}})
    assert response.status_code == 400 and "items[0].id" in error(response)


def test_an_upload_url_with_a_part_that_is_no_number_is_a_400(server):
    upload = server.post("/files/initmultipartupload?parts=1", {"name": "a", "externalId": "part-abc"}).json()
    url = upload["uploadUrls"][0].replace("part=0", "part=abc")
    response = requests.put(url, data=b"x", timeout=TIMEOUT)
    assert response.status_code == 400 and "'part'" in error(response)


@pytest.mark.parametrize("project", ["a" * 1000, "%2e%2e", "UPPER", "a_b"])
def test_a_project_name_outside_cdfs_rule_is_a_400(server, project):
    status, body = server.raw("POST", f"/api/v1/projects/{project}/files/list", b"{}")
    assert status == 400 and "project" in error(body) and len(error(body)) < 300


# --- fault injection needs a token -------------------------------------------------------------------------------------

def test_fault_injection_needs_the_apis_token(server):
    rules = {"rules": [{"path": "/files/list", "status": 503}]}
    for method in ("POST", "GET", "DELETE"):
        refused = requests.request(method, f"{server.base_url}/_local/faults", json=rules, timeout=TIMEOUT)
        assert refused.status_code == 401, (method, refused.text)
        wrong = requests.request(method, f"{server.base_url}/_local/faults", json=rules, timeout=TIMEOUT,
                                 headers={"Authorization": "Bearer not-issued-here"})
        assert wrong.status_code == 401
    assert server.post("/files/list", {}).status_code == 200  # nothing was injected
    added = requests.post(f"{server.base_url}/_local/faults", json=rules, headers=server.auth, timeout=TIMEOUT)
    assert added.status_code == 200
    assert server.post("/files/list", {}).status_code == 503
    requests.delete(f"{server.base_url}/_local/faults", headers=server.auth, timeout=TIMEOUT).raise_for_status()


def test_faults_from_the_environment_still_apply_at_start(tmp_path):
    env = {"MLOPS_LOCAL_CDF_FAULTS": json.dumps([{"path": "/files/list", "status": 503}])}
    srv = Server(tmp_path / "cdf", env=env)
    try:
        assert srv.post("/files/list", {}).status_code == 503
        listed = requests.get(f"{srv.base_url}/_local/faults", headers=srv.auth, timeout=TIMEOUT).json()["rules"]
        assert listed[0]["hits"] == 1 and srv.post("/files/list", {}).status_code == 200
    finally:
        srv.stop()


# --- signed upload URLs: one upload, then expired ------------------------------------------------------------------

def test_an_upload_url_serves_one_upload(server):
    url = server.post("/files", {"name": "one", "externalId": "one-shot"}).json()["uploadUrl"]
    assert requests.put(url, data=b"first", timeout=TIMEOUT).status_code == 200
    retried = requests.put(url, data=b"first", timeout=TIMEOUT)  # the SDK retrying a PUT whose answer was lost
    assert retried.status_code == 200
    again = requests.put(url, data=b"replaced", timeout=TIMEOUT)
    assert again.status_code == 403 and "already used" in error(again)
    link = server.post("/files/downloadlink", {"items": [{"externalId": "one-shot"}]}).json()
    assert requests.get(link["items"][0]["downloadUrl"], timeout=TIMEOUT).content == b"first"

    # An overwrite makes the URLs of the file's earlier upload useless.
    fresh = server.post("/files?overwrite=true", {"name": "two", "externalId": "one-shot"}).json()["uploadUrl"]
    assert requests.put(url, data=b"late", timeout=TIMEOUT).status_code == 403
    assert requests.put(fresh, data=b"second", timeout=TIMEOUT).status_code == 200

    # A part URL ends with its upload's completion.
    upload = server.post("/files/initmultipartupload?parts=1", {"name": "m", "externalId": "multi"}).json()
    assert requests.put(upload["uploadUrls"][0], data=b"part", timeout=TIMEOUT).status_code == 200
    assert server.post("/files/completemultipartupload", {"externalId": "multi",
                                                          "uploadId": upload["uploadId"]}).status_code == 200
    assert requests.put(upload["uploadUrls"][0], data=b"evil", timeout=TIMEOUT).status_code == 400


def test_the_sdk_retrying_an_upload_whose_answer_was_lost_succeeds(local_cdf, client):
    inject_faults(local_cdf.base_url, [{"path": "/content", "method": "PUT", "status": 503, "after": True}])
    client.files.upload_bytes(b"payload", name="r", external_id="r")
    assert fault_rules(local_cdf.base_url)[0]["hits"] == 1
    assert client.files.download_bytes(external_id="r") == b"payload"


def test_an_upload_urls_expiry_is_signed(server):
    url = server.post("/files", {"name": "e", "externalId": "expiry"}).json()["uploadUrl"]
    expires = int(url.split("exp=")[1].split("&")[0])
    assert time.time() < expires <= time.time() + 3600 + 5
    response = requests.put(url.replace(f"exp={expires}", f"exp={expires + 10**6}"), data=b"x", timeout=TIMEOUT)
    assert response.status_code == 403 and "signature" in error(response)


# --- the client secret stays out of the process list -------------------------------------------------------------------

def test_the_client_secret_comes_from_the_environment_not_the_command_line(server):
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode()
    assert SECRET not in cmdline and "app" in cmdline.split("\0")  # and the module's token came from that secret


def test_the_client_secret_may_come_from_a_file(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_LOCAL_CDF_CLIENT_SECRET"}
    done = subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", "serve", "--help"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert "ID:@FILE" in done.stdout and "MLOPS_LOCAL_CDF_CLIENT_SECRET" in done.stdout
    from akerbp.mlops.cli.local_cdf import _parse_clients

    assert _parse_clients((f"app:@{secret_file}", "other:plain")) == {"app": "from-a-file", "other": "plain"}


# --- a restart sweeps what no upload can finish -------------------------------------------------------------------------

def _leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "blobs").rglob("*") if p.is_file() or p.name.endswith(".parts"))


def test_a_restarted_server_sweeps_parts_no_upload_can_finish(tmp_path):
    data_dir = tmp_path / "cdf"
    first = Server(data_dir, env={"MLOPS_LOCAL_CDF_UPLOAD_URL_TTL_S": "2"})
    try:
        upload = first.post("/files/initmultipartupload?parts=2", {"name": "big", "externalId": "big"}).json()
        assert requests.put(upload["uploadUrls"][0], data=b"part 0", timeout=TIMEOUT).status_code == 200
        # A part still arriving when the server dies: 1 MiB of a claimed 8 MiB, its .tmp blob on disk.
        url = urlsplit(upload["uploadUrls"][1])
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
        conn.putrequest("PUT", f"{url.path}?{url.query}")
        conn.putheader("Content-Length", str(8 << 20))
        conn.endheaders()
        conn.send(b"x" * (1 << 20))
        deadline = time.monotonic() + TIMEOUT
        while not any(name.endswith(".tmp") for name in _leftovers(data_dir)):
            assert time.monotonic() < deadline, _leftovers(data_dir)
            time.sleep(0.02)
    finally:
        first.kill()
    conn.close()
    assert any(name.endswith(".parts") for name in _leftovers(data_dir))
    expires = int(upload["uploadUrls"][0].split("exp=")[1].split("&")[0])
    while time.time() <= expires:  # the upload's URLs expire: waiting for the clock, bounded by the 2 s TTL
        time.sleep(0.1)

    second = Server(data_dir)
    try:
        assert _leftovers(data_dir) == [], "an expired upload's parts and a dead writer's .tmp are swept"
        response = requests.put(second.moved(upload["uploadUrls"][0]), data=b"late", timeout=TIMEOUT)
        assert response.status_code == 403 and "expired" in error(response)
        done = second.post("/files/completemultipartupload", {"externalId": "big", "uploadId": upload["uploadId"]})
        assert done.status_code == 400

        # An upload that can still be finished survives a restart, and finishes.
        pending = second.post("/files/initmultipartupload?parts=1", {"name": "ok", "externalId": "ok"}).json()
        assert requests.put(pending["uploadUrls"][0], data=b"kept", timeout=TIMEOUT).status_code == 200
    finally:
        second.kill()
    third = Server(data_dir)
    try:
        done = third.post("/files/completemultipartupload", {"externalId": "ok", "uploadId": pending["uploadId"]})
        assert done.status_code == 200, done.text
        link = third.post("/files/downloadlink", {"items": [{"externalId": "ok"}]}).json()["items"][0]["downloadUrl"]
        assert requests.get(third.moved(link), timeout=TIMEOUT).content == b"kept"
    finally:
        third.stop()


# --- last: what all of the above cost the server ----------------------------------------------------------------------

def test_zz_peak_rss_stays_bounded(server):
    peak = server.peak_rss()
    print(f"local CDF server peak RSS under the attacks: {peak / (1 << 20):.0f} MiB")
    assert server.alive() and peak < PEAK_RSS_LIMIT, f"peak RSS {peak / (1 << 20):.0f} MiB"
