"""The model registry against a real local CDF over HTTP with the real cognite-sdk (fixtures in conftest.py)."""
from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cognite.client.data_classes import FileMetadataWrite

from akerbp.mlops import model_manager as mm
from akerbp.mlops import registry
from akerbp.mlops.registry import transfer as registry_transfer
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.registry.archive import archive_folder, extract_archive, sha256_file
from support import clear_faults, fault_rules, inject_faults


def make_folder(path: Path, marker: str = "v1") -> Path:
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "empty").mkdir()
    (path / "model.pkl").write_bytes(b"\x00\x01" * 500 + marker.encode())
    (path / "sub" / "config.json").write_text(json.dumps({"marker": marker}))
    (path / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (path / "sub" / "deeper" / "run.sh").chmod(0o755)
    return path


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "artifacts")


# -- deterministic archives (no server) -------------------------------------------------------------------------
def test_archive_is_byte_identical_for_the_same_content(tmp_path, folder):
    sha1, size1, files = archive_folder(folder, tmp_path / "a.tar.gz")
    os.utime(folder / "model.pkl", (1, 1_000_000))
    os.utime(folder / "sub", (2, 2_000_000))
    (folder / "sub" / "config.json").chmod(0o600)  # only the executable bit is kept
    sha2, size2, _ = archive_folder(folder, tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert (sha1, size1, files) == (sha2, size2, 3)
    assert sha1 == sha256_file(tmp_path / "a.tar.gz")

    raw = (tmp_path / "a.tar.gz").read_bytes()
    assert raw[3] & 0x08 == 0, "gzip header must not carry a file name"
    assert raw[4:8] == b"\x00\x00\x00\x00", "gzip header mtime must be 0"
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert {m.name: oct(m.mode) for m in members if m.isfile()} == {
        "model.pkl": "0o644", "sub/config.json": "0o644", "sub/deeper/run.sh": "0o755"}

    (folder / "model.pkl").write_bytes(b"changed")
    assert archive_folder(folder, tmp_path / "c.tar.gz")[0] != sha1


def test_archive_refuses_a_linked_folder(tmp_path, folder):
    (folder / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link to a folder"):
        archive_folder(folder, tmp_path / "a.tar.gz")


# -- safe extraction (no server) --------------------------------------------------------------------------------
def craft_tar(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))  # a harmless entry first: it must not be written either
        for member in members:
            data = b"evil" if member.isreg() else None
            if data is not None:
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _member(name, type_=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    return info


MALICIOUS = {
    "parent": (_member("../escaped.txt"), "contains '..'"),
    "nested parent": (_member("sub/../../escaped.txt"), "contains '..'"),
    "absolute": (_member("/tmp/mlops-escaped.txt"), "absolute path"),
    "symlink escaping": (_member("link", tarfile.SYMTYPE, "../../outside"), "outside the folder"),
    "symlink absolute": (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
    "hard link escaping": (_member("hard", tarfile.LNKTYPE, "../outside"), "outside the folder"),
    "device": (_member("dev", tarfile.CHRTYPE), "device"),
    "fifo": (_member("pipe", tarfile.FIFOTYPE), "device or pipe"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_refused_with_nothing_written(tmp_path, case):
    member, reason = MALICIOUS[case]
    archive = craft_tar(tmp_path / "evil.tar.gz", member)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(MlopsError, match=reason):
        extract_archive(archive, work / "target", label="evil")
    assert list(work.iterdir()) == [], "no target and no temporary folder may be left"
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/mlops-escaped.txt").exists()


def test_internal_links_extract(tmp_path):
    archive = craft_tar(tmp_path / "ok.tar.gz", _member("dir", tarfile.DIRTYPE), _member("dir/a.txt"),
                        _member("dir/link", tarfile.SYMTYPE, "a.txt"))
    extract_archive(archive, tmp_path / "target")
    assert (tmp_path / "target" / "dir" / "link").read_bytes() == b"evil"
    assert (tmp_path / "target" / "fine.txt").stat().st_mtime > 315532800, "mtime 0 would break zipfile"


def test_extract_refuses_a_non_empty_target(tmp_path, folder):
    archive_folder(folder, tmp_path / "a.tar.gz")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        extract_archive(tmp_path / "a.tar.gz", tmp_path / "target")
    assert [p.name for p in (tmp_path / "target").iterdir()] == ["keep.txt"]


# -- metadata limits and argument checks: refused before any request ------------------------------------------------
@pytest.mark.parametrize("metadata, needle", [
    ({f"k{i}": "v" for i in range(250)}, "258 metadata keys"),
    ({"k" * 129: "v"}, "is 129 bytes"),
    ({"notes": "x" * 10241}, "'notes' is 10241 bytes"),
    ({"a": "x" * 6000, "b": "y" * 6000}, "total"),
    ({"sha256": "mine"}, "'sha256' .* reserved"),
    ({"created_by": "someone else"}, "'created_by' .* reserved"),
    ({"git_commit": "f" * 40}, "'git_commit' .* reserved"),
])
def test_metadata_over_limits_fails_before_anything_is_created(client, folder, metadata, needle):
    with pytest.raises(UsageError, match=needle):
        mm.upload_new_model_version("m", "dev", folder, metadata, client=client)
    assert len(client.files.list(limit=None)) == 0
    assert client.data_sets.retrieve(external_id="mlops") is None


@pytest.mark.parametrize("key", mm.RESERVED_KEYS)
def test_every_key_the_registry_stamps_is_reserved(client, folder, key):
    with pytest.raises(UsageError, match=f"metadata key '{key}' of model m is reserved by the registry"):
        mm.upload_new_model_version("m", "dev", folder, {key: "mine"}, client=client)
    assert len(client.files.list(limit=None)) == 0


def test_every_key_the_registry_writes_is_reserved(client, folder):
    """Keys stamped on a version, its promoted copy or its tombstone: user or training metadata must not set them."""
    mm.upload_new_model_version("m", "test", folder, {"note": "mine"}, client=client)
    written = set(client.files.retrieve(external_id="m/test/1").metadata)
    mm.promote_model("m", 1, client=client)
    written |= set(client.files.retrieve(external_id="m/prod/1").metadata)
    mm.delete_model_version("m", "test", 1, client=client, confirm=True)
    written |= set(client.files.retrieve(external_id="m/test/1").metadata)
    assert {"created_by", "git_commit", "promoted_by", "deleted_by"} <= written
    assert written - {"note"} <= set(mm.RESERVED_KEYS)


@pytest.mark.parametrize("name", ["MyModel", "m-1", "1model", "_m", "m" * 41])
def test_model_names_follow_the_settings_rule(client, folder, name):
    with pytest.raises(UsageError, match=r"model name .* is invalid: use lowercase letters, digits and '_', starting "
                                         r"with a letter, at most 40 characters \(\^\[a-z\]\[a-z0-9_\]\*\$\)"):
        mm.upload_new_model_version(name, "dev", folder, client=client)
    assert len(client.files.list(limit=None)) == 0


def test_the_model_name_rule_is_the_settings_rule(client, folder):
    from akerbp.mlops.settings import MODEL_NAME_PATTERN, ModelSettings

    assert mm.MODEL_NAME_PATTERN == MODEL_NAME_PATTERN
    max_length = [m.max_length for m in ModelSettings.model_fields["model_name"].metadata if hasattr(m, "max_length")]
    assert max_length == [mm.MODEL_NAME_MAX]
    longest = "m" * mm.MODEL_NAME_MAX
    assert mm.upload_new_model_version(longest, "dev", folder, client=client)["model_id"] == f"{longest}/dev/1"


def test_arguments_are_checked(client, folder, tmp_path):
    with pytest.raises(UsageError, match="model name"):
        mm.upload_new_model_version("bad-name", "dev", folder, client=client)
    with pytest.raises(UsageError, match="environment 'qa'"):
        mm.get_model_version("m", "qa", client=client)
    with pytest.raises(UsageError, match="does not exist"):
        mm.upload_new_model_version("m", "dev", tmp_path / "absent", client=client)
    with pytest.raises(UsageError, match="prod accepts versions only by promotion: mlops models promote"):
        mm.upload_new_model_version("m", "prod", folder, client=client)
    with pytest.raises(UsageError, match="versions are integers"):
        mm.get_model_version("m", "dev", 0, client=client)


# -- the registry on the local CDF ----------------------------------------------------------------------------------
def test_upload_get_download_round_trip(client, folder, tmp_path):
    info = mm.upload_new_model_version("m", "dev", folder, {"accuracy": 0.93, "note": "first"}, client=client)
    assert (info["version"], info["model_id"]) == (1, "m/dev/1")
    stored = client.files.retrieve(external_id="m/dev/1")
    assert stored.name == "m-dev-1.tar.gz" and stored.directory == "/mlops"
    assert stored.data_set_id == client.data_sets.retrieve(external_id="mlops").id
    md = stored.metadata
    assert md["accuracy"] == "0.93" and md["note"] == "first" and md["version"] == "1"
    assert md["sha256"] == info["sha256"] and md["size"] == str(info["size"])
    assert {"created_by", "git_commit", "framework_version", "model_name", "env"} <= set(md)

    got = mm.get_model_version("m", "dev", client=client)
    assert got["version"] == 1 and got["metadata"]["accuracy"] == "0.93"
    downloaded = mm.download_model_version("m", "dev", tmp_path / "out", client=client)
    assert downloaded["sha256"] == info["sha256"]
    for rel in ("model.pkl", "sub/config.json", "sub/deeper/run.sh"):
        assert (tmp_path / "out" / rel).read_bytes() == (folder / rel).read_bytes()
    assert (tmp_path / "out" / "empty").is_dir()
    assert os.access(tmp_path / "out" / "sub" / "deeper" / "run.sh", os.X_OK)


CHILD = r"""
import json, sys
from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import Token
from akerbp.mlops.model_manager import upload_new_model_version
global_config.disable_pypi_version_check = True
base_url, folder = sys.argv[1], sys.argv[2]
client = CogniteClient(ClientConfig(client_name="child", project="test", base_url=base_url,
                                    credentials=Token("local-token")))
print("ready", flush=True)
sys.stdin.readline()  # barrier: the parent releases every process at once
info = upload_new_model_version("race", "dev", folder, {"folder": folder}, client=client)
print(json.dumps(info.as_dict()), flush=True)
"""


def test_eight_concurrent_processes_get_versions_one_to_eight(local_cdf, client, tmp_path):
    folders = [make_folder(tmp_path / f"art{i}", marker=f"process-{i}") for i in range(8)]
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, local_cdf.base_url, str(f)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for f in folders]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["version"] for r in results) == list(range(1, 9))
    assert len({r["sha256"] for r in results}) == 8

    assert [v["version"] for v in mm.list_model_versions("race", "dev", client=client)] == list(range(1, 9))
    for r in results:
        target = tmp_path / f"out{r['version']}"
        got = mm.download_model_version("race", "dev", target, r["version"], client=client)
        assert got["sha256"] == r["sha256"]
        source = Path(r["metadata"]["folder"]) / "sub" / "config.json"
        assert (target / "sub" / "config.json").read_text() == source.read_text()
    assert mm.get_model_version("race", "dev", client=client)["version"] == 8


def test_tampered_archive_is_detected_and_nothing_extracted(client, folder, tmp_path):
    mm.upload_new_model_version("m", "dev", folder, client=client)
    client.files.upload_content_bytes(b"not the uploaded archive", external_id="m/dev/1")  # keeps the metadata
    with pytest.raises(MlopsError, match="checksum mismatch .* the archive was modified after upload"):
        mm.download_model_version("m", "dev", tmp_path / "out", client=client)
    assert not (tmp_path / "out").exists()


def test_malicious_archive_with_a_matching_checksum_is_refused(client, folder, tmp_path):
    mm.upload_new_model_version("m", "dev", folder, client=client)
    evil = craft_tar(tmp_path / "evil.tar.gz", _member("../escaped.txt"))
    md = {**client.files.retrieve(external_id="m/dev/1").metadata, "sha256": sha256_file(evil)}
    client.files.upload(evil, external_id="m/dev/1", name="m-dev-1.tar.gz", directory="/mlops", metadata=md,
                        overwrite=True)
    (tmp_path / "work").mkdir()
    with pytest.raises(MlopsError, match="refusing to extract m/dev/1"):
        mm.download_model_version("m", "dev", tmp_path / "work" / "out", client=client)
    assert list((tmp_path / "work").iterdir()) == [] and not (tmp_path / "work" / "escaped.txt").exists()


def test_deleted_numbers_are_never_reused(client, folder, tmp_path):
    for _ in range(3):
        mm.upload_new_model_version("m", "dev", folder, client=client)
    with pytest.raises(UsageError, match="confirm=True"):
        mm.delete_model_version("m", "dev", 3, client=client)
    deleted = mm.delete_model_version("m", "dev", 3, client=client, confirm=True)
    assert deleted["deleted"] is True and deleted["model_id"] == "m/dev/3"
    tombstone = client.files.retrieve(external_id="m/dev/3")
    assert tombstone.metadata["deleted"] == "true" and client.files.download_bytes(external_id="m/dev/3") == b""

    assert mm.get_model_version("m", "dev", client=client)["version"] == 2
    assert [v["version"] for v in mm.list_model_versions("m", client=client)] == [1, 2]
    with pytest.raises(MlopsError, match="m/dev/3 was deleted"):
        mm.download_model_version("m", "dev", tmp_path / "out", 3, client=client)
    with pytest.raises(MlopsError, match="already deleted"):
        mm.delete_model_version("m", "dev", 3, client=client, confirm=True)
    assert mm.upload_new_model_version("m", "dev", folder, client=client)["version"] == 4


def test_latest_ignores_an_unfinished_upload(client, folder):
    mm.upload_new_model_version("m", "dev", folder, client=client)
    client.files.create(FileMetadataWrite(external_id="m/dev/2", name="m-dev-2.tar.gz", directory="/mlops",
                                          metadata={"version": "2", "sha256": "0" * 64}))  # never gets content
    assert mm.get_model_version("m", "dev", client=client)["version"] == 1
    with pytest.raises(MlopsError, match="not fully uploaded"):
        mm.get_model_version("m", "dev", 2, client=client)
    assert [v["version"] for v in mm.list_model_versions("m", "dev", client=client)] == [1]
    assert mm.upload_new_model_version("m", "dev", folder, client=client)["version"] == 3


def add_faults(local_cdf, *rules: dict) -> None:
    inject_faults(local_cdf.base_url, rules)


def remove_faults(local_cdf) -> None:
    clear_faults(local_cdf.base_url)


# More than the SDK's retries: whatever the status, the content never arrives.
CONTENT_PUT_FAILS = {"path": "/content", "method": "PUT", "status": 500, "count": 20}


def test_a_failed_content_upload_leaves_a_tombstone_with_the_reason(local_cdf, client, folder):
    mm.upload_new_model_version("m", "dev", folder, client=client)
    add_faults(local_cdf, CONTENT_PUT_FAILS)
    with pytest.raises(MlopsError, match=r"uploading m/dev/2 failed: .*Injected fault.*; m/dev/2 is now a tombstone "
                                         r"\(deleted_reason says why\).*Upload again: it takes the next number"):
        mm.upload_new_model_version("m", "dev", folder, client=client)
    remove_faults(local_cdf)

    md = client.files.retrieve(external_id="m/dev/2").metadata
    assert md["deleted"] == "true" and md["deleted_reason"].startswith("upload failed: ")
    assert "Injected fault" in md["deleted_reason"]
    assert set(md) <= set(mm.RESERVED_KEYS)
    with pytest.raises(MlopsError, match="m/dev/2 was deleted"):
        mm.get_model_version("m", "dev", 2, client=client)
    assert mm.upload_new_model_version("m", "dev", folder, client=client)["version"] == 3
    assert [v["version"] for v in mm.list_model_versions("m", "dev", client=client)] == [1, 3]
    assert mm.get_model_version("m", "dev", client=client)["version"] == 3


def test_a_failed_upload_whose_tombstone_fails_too_stays_hidden_and_its_number_taken(local_cdf, client, folder):
    mm.upload_new_model_version("m", "dev", folder, client=client)
    add_faults(local_cdf, CONTENT_PUT_FAILS, {"path": "/files/update", "status": 500, "count": 20})
    with pytest.raises(MlopsError, match="uploading m/dev/2 failed: .*m/dev/2 is left unfinished .*writing its "
                                         "tombstone failed too"):
        mm.upload_new_model_version("m", "dev", folder, client=client)
    remove_faults(local_cdf)
    assert client.files.retrieve(external_id="m/dev/2").uploaded is False
    assert mm.upload_new_model_version("m", "dev", folder, client=client)["version"] == 3
    assert [v["version"] for v in mm.list_model_versions("m", client=client)] == [1, 3]


class Recorder:
    """A Progress callback keeping every report; SDK threads report too, hence the lock."""

    def __init__(self):
        import threading

        self.reports, self._lock = [], threading.Lock()

    def __call__(self, what, done, total, finished):
        with self._lock:
            self.reports.append((what, done, total, finished))

    def steps(self):
        return list(dict.fromkeys(r[0] for r in self.reports))

    def last(self, what):
        return [r for r in self.reports if r[0] == what][-1]


def test_progress_reports_bytes_of_every_step(client, folder, tmp_path):
    upload = Recorder()
    info = mm.upload_new_model_version("m", "test", folder, client=client, progress=upload)
    source_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert upload.steps() == [f"archiving {folder}", "uploading m/test/1 (3 files)"]
    assert upload.last(f"archiving {folder}") == (f"archiving {folder}", source_bytes, source_bytes, True)
    assert upload.last("uploading m/test/1 (3 files)")[1:] == (info["size"], info["size"], True)
    assert [r[3] for r in upload.reports].count(True) == 2, "each step finishes once"

    download = Recorder()
    mm.download_model_version("m", "test", tmp_path / "out", client=client, progress=download)
    assert download.steps() == ["downloading m/test/1", f"extracting into {tmp_path / 'out'}"]
    assert download.last("downloading m/test/1")[1:] == (info["size"], info["size"], True)

    promotion = Recorder()
    mm.promote_model("m", 1, client=client, progress=promotion)
    assert promotion.steps() == ["downloading m/test/1", "uploading m/prod/1"]
    assert promotion.last("uploading m/prod/1")[1:] == (info["size"], info["size"], True)


def test_archives_larger_than_a_part_upload_in_several_parts(client, tmp_path, monkeypatch):
    """Small parts exercise the same code as 8 MiB ones; progress counts each part CDF took."""
    monkeypatch.setattr(registry_transfer, "PART_SIZE", 1000)
    folder = tmp_path / "art"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(os.urandom(4500))  # incompressible: the archive spans 5 or 6 parts
    recorder = Recorder()
    info = mm.upload_new_model_version("m", "dev", folder, client=client, progress=recorder)
    assert 4500 < info["size"] < 6000
    uploaded = [r[1] for r in recorder.reports if r[0] == "uploading m/dev/1 (1 files)" and not r[3]]
    assert uploaded == [0] + list(range(1000, info["size"], 1000)) + [info["size"]]
    mm.download_model_version("m", "dev", tmp_path / "out", client=client)
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()


def test_a_part_answered_with_a_retryable_status_is_resent(local_cdf, client, folder, tmp_path):
    """A file handle cannot be resent (cognite-sdk's files.upload fails so): parts go as bytes."""
    add_faults(local_cdf, {"path": "/content", "method": "PUT", "status": 503, "count": 1})
    info = mm.upload_new_model_version("m", "dev", folder, client=client)
    assert fault_rules(local_cdf.base_url)[0]["hits"] == 1
    assert client.files.retrieve(external_id="m/dev/1").uploaded
    assert mm.download_model_version("m", "dev", tmp_path / "out", client=client)["sha256"] == info["sha256"]


def test_part_sizes_follow_the_files_api_limits():
    mib = 1024 * 1024
    assert registry_transfer._parts(0) == (8 * mib, 1)
    assert registry_transfer._parts(8 * mib) == (8 * mib, 1)
    assert registry_transfer._parts(8 * mib + 1) == (8 * mib, 2)
    assert registry_transfer._parts(250 * 8 * mib) == (8 * mib, 250)
    part_size, parts = registry_transfer._parts(250 * 8 * mib + 1)  # more than 250 parts of 8 MiB
    assert parts == 250 and part_size * 250 >= 250 * 8 * mib + 1
    with pytest.raises(MlopsError, match="at most"):
        registry_transfer._parts(250 * 4000 * mib + 1)


def test_missing_versions_say_how_to_get_one(client, folder):
    with pytest.raises(MlopsError, match="no version in dev: upload one: mlops models upload m --env dev"):
        mm.get_model_version("m", "dev", client=client)
    with pytest.raises(MlopsError, match="promote one: mlops models promote m --version N --to prod"):
        mm.get_model_version("m", "prod", client=client)
    mm.upload_new_model_version("m", "dev", folder, client=client)
    with pytest.raises(MlopsError, match="m/dev/7 does not exist"):
        mm.get_model_version("m", "dev", 7, client=client)


def test_promotion_copies_verifies_and_is_idempotent(client, folder, tmp_path):
    other = make_folder(tmp_path / "other", marker="other")
    mm.upload_new_model_version("m", "test", other, client=client)  # test 1
    mm.upload_new_model_version("m", "test", folder, client=client)  # test 2
    promoted = mm.promote_model("m", 2, client=client)  # default: test -> prod
    assert promoted["model_id"] == "m/prod/2" and promoted["unchanged"] is False
    assert promoted["metadata"]["promoted_from"] == "m/test/2"
    source = client.files.retrieve(external_id="m/test/2")
    target = client.files.retrieve(external_id="m/prod/2")
    assert target.metadata["sha256"] == source.metadata["sha256"] and target.metadata["env"] == "prod"
    assert client.files.download_bytes(id=target.id) == client.files.download_bytes(id=source.id)
    assert target.data_set_id == source.data_set_id

    again = mm.promote_model("m", 2, client=client)
    assert again["unchanged"] is True and again["file_id"] == target.id
    # Sparse prod numbers (promotion keeps N): latest is still the highest.
    mm.promote_model("m", 1, client=client)
    assert mm.get_model_version("m", "prod", client=client)["version"] == 2
    assert [v["version"] for v in mm.list_model_versions("m", "prod", client=client)] == [1, 2]

    # Different bytes already under prod N are refused.
    mm.upload_new_model_version("m", "test", other, client=client)  # test 3
    mm.upload_new_model_version("m", "prod", folder, client=client, allow_prod=True)  # prod 3, other bytes
    with pytest.raises(MlopsError, match="m/prod/3 already holds different bytes"):
        mm.promote_model("m", 3, client=client)
    with pytest.raises(UsageError, match="first environment"):
        mm.promote_model("m", 1, "dev", client=client)


def test_promoting_onto_a_deleted_number_is_refused(client, folder):
    mm.upload_new_model_version("m", "dev", folder, client=client)
    mm.promote_model("m", 1, "test", client=client)
    mm.delete_model_version("m", "test", 1, client=client, confirm=True)
    with pytest.raises(MlopsError, match="never reused"):
        mm.promote_model("m", 1, "test", client=client)


def test_prod_deletion_needs_force(client, folder):
    mm.upload_new_model_version("m", "test", folder, client=client)
    mm.promote_model("m", 1, client=client)
    with pytest.raises(UsageError, match="force=True"):
        mm.delete_model_version("m", "prod", 1, client=client, confirm=True)
    assert mm.get_model_version("m", "prod", client=client)["version"] == 1
    mm.delete_model_version("m", "prod", 1, client=client, confirm=True, force=True)
    assert mm.list_model_versions("m", "prod", client=client) == []


def _claim_unfinished(client, env: str, numbers) -> None:
    """Versions a crashed uploader left behind (numbers taken, no content), with the markers it created first."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda b: client.files.upload_bytes(b"", name="marker", external_id=mm.marker_xid("big", env, b)),
                      range(max(numbers) // mm.BLOCK + 1)))
        list(pool.map(lambda n: client.files.create(FileMetadataWrite(external_id=f"big/{env}/{n}", name="x")),
                      numbers))


def test_block_markers_across_hundreds_of_versions(client, folder, tmp_path):
    _claim_unfinished(client, "dev", range(1, 200))  # 1..199: markers 0 and 1
    with pytest.raises(MlopsError, match="no version in dev"):
        mm.get_model_version("big", "dev", client=client)
    assert mm.upload_new_model_version("big", "dev", folder, client=client)["version"] == 200  # creates marker 2
    assert client.files.retrieve(external_id=mm.marker_xid("big", "dev", 2)) is not None
    assert mm.get_model_version("big", "dev", client=client)["version"] == 200

    # test is empty: promoting 200 creates its markers 0..2 so the lookup finds a lone, high version.
    assert mm.promote_model("big", 200, "test", client=client)["model_id"] == "big/test/200"
    assert mm.get_model_version("big", "test", client=client)["version"] == 200
    assert mm.upload_new_model_version("big", "test", folder, client=client)["version"] == 201
    mm.delete_model_version("big", "test", 201, client=client, confirm=True)
    mm.delete_model_version("big", "test", 200, client=client, confirm=True)
    with pytest.raises(MlopsError, match="no version in test"):
        mm.get_model_version("big", "test", client=client)
    assert mm.upload_new_model_version("big", "test", folder, client=client)["version"] == 202


def test_helpers_notebook_api(local_cdf, folder, tmp_path, monkeypatch):
    from akerbp.mlops.cdf import client as cdf_client
    from akerbp.mlops.cdf import helpers
    from akerbp.mlops.registry import notebook

    for var in cdf_client.CONFIG_VARS + ("CI", "BITBUCKET_BUILD_NUMBER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLOPS_LOCAL_CDF_DIR", str(tmp_path / "notebook-cdf"))
    cdf_client.reset_clients()
    try:
        client = helpers.set_up_cdf_client()
        info = helpers.upload_new_model_version("nb", "dev", folder, {"k": "v"})
        assert info["model_id"] == "nb/dev/1"
        assert client.files.retrieve(external_id="nb/dev/1").metadata["k"] == "v"
        assert helpers.get_model_version("nb", "dev")["version"] == 1
        assert [v["model_id"] for v in helpers.list_model_versions()] == ["nb/dev/1"]
    finally:
        notebook._default_client = None
        cdf_client.reset_clients()


def test_the_registry_imports_only_what_a_function_bundle_holds():
    code = ("import sys, akerbp.mlops.registry, akerbp.mlops.model_manager; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'pydantic', 'yaml') "
            "or m.startswith(('akerbp.mlops.cdf', 'akerbp.mlops.cli', 'akerbp.mlops.settings'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


REGISTRY = Path(registry.__file__).parent
# Bundled into every function with the registry, so the registry may use them (promotion's audit record, who/commit).
BUNDLED_NEIGHBOURS = ("akerbp.mlops.errors", "akerbp.mlops.vocabulary", "akerbp.mlops.audit",
                      "akerbp.mlops.utils.provenance")
# Imported only inside a function, when no client is passed: a deployed function always passes its own.
LAZY_ONLY = ("akerbp.mlops.cdf.client",)


def _imports(nodes) -> list[str]:
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("module", sorted(p.stem for p in REGISTRY.glob("*.py")))
def test_registry_modules_import_only_the_stdlib_cognite_sdk_errors_and_each_other(module):
    """The registry is in every function bundle: it must not drag in anything a bundle lacks."""
    tree = ast.parse((REGISTRY / f"{module}.py").read_text())
    everywhere = _imports(ast.walk(tree))
    lazy = _imports(n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for n in ast.walk(f))
    others = [name for name in everywhere if name.split(".")[0] not in sys.stdlib_module_names
              and name.split(".")[0] not in ("__future__", "cognite") and name not in BUNDLED_NEIGHBOURS
              and name != "akerbp.mlops" and not name.startswith("akerbp.mlops.registry")
              and not (name in LAZY_ONLY and name in lazy)]
    assert everywhere and others == []


def test_function_bundles_hold_the_registry_package_and_the_seeds_module_name_only_as_a_shim():
    from akerbp.mlops.deployment.bundle import runtime_files

    source = Path(registry.__file__).parent.parent
    bundled = {p.relative_to(source).as_posix() for p in runtime_files()}
    assert {f"registry/{p.name}" for p in REGISTRY.glob("*.py")} <= bundled
    assert not [name for name in bundled if name.startswith("registry_")]
    # Model code written for the seed imports akerbp.mlops.model_manager inside its function: the re-exports ship too.
    assert "model_manager.py" in bundled
