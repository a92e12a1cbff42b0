"""The registry's typed results and specific errors, against a real local CDF over HTTP with the real cognite-sdk.

ModelVersion.as_dict() must be the dict the registry returned before it was typed (`mlops models ... --json` prints
it), and each failure must be its own class, so callers test the class instead of a message or `__cause__`.
"""
from __future__ import annotations

import datetime
import io
import json
import tarfile
from pathlib import Path

import pytest
from cognite.client.data_classes import FileMetadataWrite
from cognite.client.exceptions import CogniteAPIError

from akerbp.mlops import registry
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.registry.archive import sha256_file
from support import clear_faults, inject_faults

# The keys of the seed's dict result, in its order; then the extras each operation appended.
SEED_KEYS = ["model_name", "env", "version", "model_id", "file_id", "name", "sha256", "size", "created_by",
             "created_time", "git_commit", "promoted_from", "uploaded", "metadata"]


def seed_dict(f) -> dict:
    """What the seed's registry_rules.version_info() made of a version's CDF file."""
    md = dict(f.metadata or {})
    model_name, env, version = f.external_id.split("/")
    return {
        "model_name": model_name, "env": env, "version": int(version), "model_id": f.external_id, "file_id": f.id,
        "name": f.name, "sha256": md.get("sha256", ""), "size": int(md.get("size") or 0),
        "created_by": md.get("created_by", ""),
        "created_time": datetime.datetime.fromtimestamp(f.created_time / 1000, datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "git_commit": md.get("git_commit", ""), "promoted_from": md.get("promoted_from", ""),
        "uploaded": bool(f.uploaded), "metadata": md,
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "artifact"
    (path / "sub").mkdir(parents=True)
    (path / "model.pkl").write_bytes(b"weights")
    (path / "sub" / "config.json").write_text("{}")
    return path


def test_as_dict_is_the_seed_dict_for_every_operation(client, folder, tmp_path):
    uploaded = registry.upload_new_model_version("m", "test", folder, {"note": "x"}, client=client)
    stored = client.files.retrieve(external_id="m/test/1")
    assert isinstance(uploaded, registry.ModelVersion)
    assert uploaded.as_dict() == {**seed_dict(stored), "files": 2}
    assert list(uploaded.as_dict()) == SEED_KEYS + ["files"]

    got = registry.get_model_version("m", "test", client=client)
    assert got.as_dict() == seed_dict(stored) and list(got.as_dict()) == SEED_KEYS
    assert [v.as_dict() for v in registry.list_model_versions("m", client=client)] == [seed_dict(stored)]
    downloaded = registry.download_model_version("m", "test", tmp_path / "out", client=client)
    assert downloaded.as_dict() == {**seed_dict(stored), "path": str(tmp_path / "out")}

    promoted = registry.promote_model("m", 1, client=client)
    copy = client.files.retrieve(external_id="m/prod/1")
    seed_md = {k: v for k, v in copy.metadata.items() if k != "promoted_at"}
    assert {**promoted.as_dict(), "metadata": {k: v for k, v in promoted.metadata.items() if k != "promoted_at"}} \
        == {**seed_dict(copy), "metadata": seed_md, "unchanged": False}
    again = registry.promote_model("m", 1, client=client)
    assert again.as_dict() == {**seed_dict(copy), "unchanged": True}
    assert list(again.as_dict()) == SEED_KEYS + ["unchanged"]

    deleted = registry.delete_model_version("m", "test", 1, client=client, confirm=True)
    assert deleted.as_dict() == {**seed_dict(stored), "deleted": True}
    json.dumps(deleted.as_dict())  # what --json prints


def test_model_version_reads_like_the_seed_dict(client, folder):
    """For callers written against the seed's dicts: info["version"], info.get(...), dict(info), {**info}."""
    info = registry.upload_new_model_version("m", "dev", folder, client=client)
    assert (info["version"], info["model_id"], info.get("files"), info.get("unchanged")) == (1, "m/dev/1", 2, None)
    assert dict(info) == {**info} == info.as_dict() and "sha256" in info and "path" not in info
    assert (info.external_id, info.framework_version) == ("m/dev/1", info.metadata["framework_version"])
    with pytest.raises(KeyError):
        info["path"]
    with pytest.raises(AttributeError):
        info.version = 2  # frozen


def test_missing_deleted_and_unfinished_versions_are_their_own_errors(client, folder):
    with pytest.raises(registry.VersionNotFound, match="no version in dev"):
        registry.get_model_version("m", "dev", client=client)
    registry.upload_new_model_version("m", "dev", folder, client=client)
    with pytest.raises(registry.VersionNotFound, match="m/dev/7 does not exist"):
        registry.get_model_version("m", "dev", 7, client=client)
    client.files.create(FileMetadataWrite(external_id="m/dev/2", name="m-dev-2.tar.gz", directory="/mlops"))
    with pytest.raises(registry.VersionIncomplete, match="not fully uploaded"):
        registry.get_model_version("m", "dev", 2, client=client)
    registry.delete_model_version("m", "dev", 1, client=client, confirm=True)
    with pytest.raises(registry.VersionDeleted, match="m/dev/1 was deleted"):
        registry.get_model_version("m", "dev", 1, client=client)
    with pytest.raises(registry.VersionDeleted, match="already deleted"):
        registry.delete_model_version("m", "dev", 1, client=client, confirm=True)
    for cls in (registry.VersionNotFound, registry.VersionDeleted, registry.VersionIncomplete):
        assert issubclass(cls, registry.VersionUnavailable) and issubclass(cls, MlopsError) and cls.exit_code == 1


def test_tampered_and_unsafe_archives_are_their_own_errors(client, folder, tmp_path):
    registry.upload_new_model_version("m", "dev", folder, client=client)
    client.files.upload_content_bytes(b"not the uploaded archive", external_id="m/dev/1")
    with pytest.raises(registry.ChecksumMismatch, match="checksum mismatch for m/dev/1"):
        registry.download_model_version("m", "dev", tmp_path / "a", client=client)

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 4
        tar.addfile(member, io.BytesIO(b"evil"))
    md = {**client.files.retrieve(external_id="m/dev/1").metadata, "sha256": sha256_file(evil)}
    client.files.upload(evil, external_id="m/dev/1", name="m-dev-1.tar.gz", directory="/mlops", metadata=md,
                        overwrite=True)
    with pytest.raises(registry.UnsafeArchive, match="refusing to extract m/dev/1"):
        registry.download_model_version("m", "dev", tmp_path / "b", client=client)
    assert registry.ChecksumMismatch.exit_code == registry.UnsafeArchive.exit_code == 1


def test_promotion_conflicts_and_prod_uploads_are_their_own_errors(client, folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.pkl").write_bytes(b"other weights")
    registry.upload_new_model_version("m", "test", folder, client=client)
    registry.upload_new_model_version("m", "prod", other, client=client, allow_prod=True)
    with pytest.raises(registry.PromotionConflict, match="m/prod/1 already holds different bytes"):
        registry.promote_model("m", 1, client=client)
    with pytest.raises(registry.ProdUploadRefused, match="prod accepts versions only by promotion") as refused:
        registry.upload_new_model_version("m", "prod", folder, client=client)
    assert isinstance(refused.value, UsageError) and refused.value.exit_code == 2


def test_a_failed_content_upload_is_upload_failed(local_cdf, client, folder):
    registry.upload_new_model_version("m", "dev", folder, client=client)  # the markers exist: only content fails
    inject_faults(local_cdf.base_url, [{"path": "/content", "method": "PUT", "status": 500, "count": 20}])
    with pytest.raises(registry.UploadFailed, match="m/dev/2 is now a tombstone"):
        registry.upload_new_model_version("m", "dev", folder, client=client)


def test_cdf_failing_to_answer_is_registry_request_failed_not_a_missing_version(local_cdf, client, folder):
    """What the deploy tells apart: CDF did not answer (no advice about versions) from a version that is missing."""
    registry.upload_new_model_version("m", "dev", folder, client=client)
    inject_faults(local_cdf.base_url, [{"path": "/files/byids", "status": 403, "count": 5}])
    with pytest.raises(registry.RegistryRequestFailed, match="CDF request failed in get_model_version") as failed:
        registry.get_model_version("m", "dev", client=client)
    assert not isinstance(failed.value, registry.VersionUnavailable) and failed.value.exit_code == 1
    assert isinstance(failed.value.__cause__, CogniteAPIError)
    clear_faults(local_cdf.base_url)
    assert registry.get_model_version("m", "dev", client=client).version == 1
