"""CDF Files: metadata in the store, contents streamed to and from blobs through signed upload/download URLs.

Upload and download URLs carry an HMAC signature instead of needing the bearer token, as CDF's signed cloud-storage
URLs do. An upload URL also carries its expiry (UPLOAD_URL_TTL_S) and serves one upload: a single-part URL names a
one-time token kept with the file until its PUT lands (then the content is final: a repeated PUT is refused, unless
it retries the same bytes, as the SDK does when an answer was lost); a part URL names its multipart upload, which
ends at completion. A multipart upload keeps its parts as separate blobs and a download streams them in order, so
completing a 1 GiB upload copies nothing.
"""
from __future__ import annotations

import filecmp
import hashlib
import hmac
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from werkzeug.wrappers import Response

from ..http.app import Ctx, Router
from ..http.errors import CDFError, bad_request, duplicated
from ..http.filters import contains_any, data_set_ids, eq, metadata, prefix, time_range
from ..http.resources import Kind
from ..store import FILES_UPDATED, now_ms, public
from ..http.validation import check, identifiers, metadata_limits, text_limits

routes = Router()
KIND = "files"
CHUNK = 4 << 20
MAX_PARTS = 250
# How long an upload URL (and a multipart upload) stays valid. Default one hour: the SDK PUTs at once, and what an
# abandoned upload left on disk is removed once it expired (sweep.py, at the next start).
UPLOAD_URL_TTL_S = float(os.environ.get("MLOPS_LOCAL_CDF_UPLOAD_URL_TTL_S", 3600))

FILE_FIELDS = {
    "externalId": str, "name": str, "directory": str, "source": str, "mimeType": str, "metadata": dict,
    "assetIds": list, "dataSetId": int, "sourceCreatedTime": int, "sourceModifiedTime": int,
    "securityCategories": list, "labels": list, "geoLocation": dict, "instanceId": dict,
}
UPDATABLE = {k: v for k, v in FILE_FIELDS.items() if k not in ("name", "instanceId")}


def _updated_range(value: Any, ctx: Ctx) -> tuple[str, list]:
    """lastUpdatedTime through the store's index on it: an incremental sync's narrow window (what changed in the last
    seconds) reads its few rows, not the JSON of every file (300,000 registry files: 0.4 ms instead of 0.7 s a page).
    A window holding most files costs more per page than a scan would (the matching ids are gathered each page)."""
    check(value, {"min": int, "max": int}, "filter.lastUpdatedTime")
    bounds = [(op, value[key]) for key, op in (("min", ">="), ("max", "<=")) if value.get(key) is not None]
    if not bounds:
        return "1", []
    where = " AND ".join(f"{FILES_UPDATED} {op} ?" for op, _ in bounds)
    return (f"id IN (SELECT id FROM resources WHERE project=? AND kind='files' AND {where})",
            [ctx.project, *(v for _, v in bounds)])


FILES = Kind(
    KIND,
    "Files",
    filters={
        "name": eq("name"), "directoryPrefix": prefix("directory"), "mimeType": eq("mimeType"),
        "metadata": metadata, "assetIds": contains_any("assetIds"), "dataSetIds": data_set_ids,
        "source": eq("source"), "externalIdPrefix": prefix("externalId"), "uploaded": eq("uploaded"),
        "createdTime": time_range("createdTime"), "lastUpdatedTime": _updated_range,
        "uploadedTime": time_range("uploadedTime"), "sourceCreatedTime": time_range("sourceCreatedTime"),
        "sourceModifiedTime": time_range("sourceModifiedTime"),
    },
    updatable=UPDATABLE,
)


def validate_file(body: dict, where: str) -> None:
    text_limits(body, where, {"externalId": 255, "name": 256, "directory": 512, "source": 128, "mimeType": 256})
    metadata_limits(body.get("metadata"), f"{where}.metadata", 256, 128, 10240, 10240)


# -- creating a file and the links to fill it -----------------------------------------------------------------
def _sign(ctx: Ctx, *parts) -> str:
    text = ":".join(str(p) for p in (ctx.project, *parts))
    return hmac.new(ctx.store.secret.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]


def _upload_url(ctx: Ctx, file_id: int, upload_id: str = "", part: int = 0, token: str = "",
                expires: int = 0) -> str:
    """A URL for one part of `upload_id` (expiring with it), or for the single PUT that `token` allows."""
    expires = expires or _expiry()
    query = f"exp={expires}&sig={_sign(ctx, 'up', file_id, upload_id or token, part, expires)}"
    query += f"&uploadId={upload_id}&part={part}" if upload_id else f"&token={token}"
    return ctx.url(f"/_local/files/{ctx.project}/{file_id}/content?{query}")


def _expiry() -> int:
    return int(time.time() + UPLOAD_URL_TTL_S)


def new_upload_token(file: dict) -> str:
    """Allow one single-part PUT of `file` (a new token supersedes an earlier, unused one)."""
    file["_uploadToken"] = uuid.uuid4().hex
    return file["_uploadToken"]


def single_blob(store, project: str, file_id: int, token: str | None) -> Path:
    """Where a single-part upload's content lives: named by its token, so a late PUT never replaces a newer one."""
    base = store.blob_path(project, file_id)
    return base.with_name(f"{base.name}.{token}") if token else base


def _parts(ctx: Ctx) -> int:
    try:
        parts = int(ctx.args.get("parts", ""))
    except ValueError:
        raise bad_request("Query parameter 'parts' must be an integer from 1 to 250") from None
    if not 1 <= parts <= MAX_PARTS:
        raise bad_request(f"Query parameter 'parts' must be from 1 to {MAX_PARTS}, got {parts}")
    return parts


def _create_or_overwrite(ctx: Ctx) -> dict:
    body = check(ctx.body, FILE_FIELDS, "", required=("name",))
    validate_file(body, "file")
    overwrite = ctx.flag("overwrite")
    fresh = {**body, "uploaded": False}
    new_upload_token(fresh)
    with ctx.store.write() as db:
        existing = ctx.store.get_xid(ctx.project, KIND, body["externalId"], db) if body.get("externalId") else None
        if existing and not overwrite:
            raise duplicated([{"externalId": body["externalId"]}], "Files")
        if existing:
            _drop_content(ctx, existing)
            fresh = {"id": existing["id"], "createdTime": existing["createdTime"], **fresh}
            return ctx.store.save(db, ctx.project, KIND, fresh)
        return ctx.store.insert(db, ctx.project, KIND, fresh)


@routes.post("/files")
def create(ctx: Ctx) -> dict:
    file = _create_or_overwrite(ctx)
    return {**public(file), "uploadUrl": _upload_url(ctx, file["id"], token=file["_uploadToken"])}


@routes.post("/files/initmultipartupload")
def init_multipart(ctx: Ctx) -> dict:
    parts = _parts(ctx)
    file = _create_or_overwrite(ctx)
    upload_id = uuid.uuid4().hex
    expires = _remember_upload(ctx, file["id"], upload_id, parts)
    return {**public(file), "uploadId": upload_id,
            "uploadUrls": [_upload_url(ctx, file["id"], upload_id, i, expires=expires) for i in range(parts)]}


@routes.post("/files/uploadlink")
def upload_link(ctx: Ctx) -> dict:
    with ctx.store.write() as db:
        found = ctx.store.resolve(ctx.project, KIND, identifiers(ctx.body), db=db, what="Files")
        for file in found:
            new_upload_token(file)
            ctx.store.save(db, ctx.project, KIND, file, touch=False)
    return {"items": [{**public(f), "uploadUrl": _upload_url(ctx, f["id"], token=f["_uploadToken"])}
                      for f in found]}


@routes.post("/files/multiuploadlink")
def multi_upload_link(ctx: Ctx) -> dict:
    parts = _parts(ctx)
    found = ctx.store.resolve(ctx.project, KIND, identifiers(ctx.body, max_items=1), what="Files")
    result = []
    for f in found:
        upload_id = uuid.uuid4().hex
        expires = _remember_upload(ctx, f["id"], upload_id, parts)
        result.append({**public(f), "uploadId": upload_id,
                       "uploadUrls": [_upload_url(ctx, f["id"], upload_id, i, expires=expires) for i in range(parts)]})
    return {"items": result}


def _remember_upload(ctx: Ctx, file_id: int, upload_id: str, parts: int) -> int:
    """Record a multipart upload; its expiry (the upload and its URLs end then)."""
    expires = _expiry()
    with ctx.store.write() as db:
        file = ctx.store.get_known(ctx.project, KIND, file_id, db, what="Files")
        file.setdefault("_uploads", {})[upload_id] = {"parts": parts, "expires": expires}
        ctx.store.save(db, ctx.project, KIND, file, touch=False)
    return expires


@routes.post("/files/completemultipartupload")
def complete_multipart(ctx: Ctx) -> dict:
    check(ctx.body, {"id": int, "externalId": str, "uploadId": str}, "", required=("uploadId",))
    ident = identifiers({"items": [{k: ctx.body[k] for k in ("id", "externalId") if k in ctx.body}]})
    upload_id = ctx.body["uploadId"]
    with ctx.store.write() as db:
        file = ctx.store.resolve(ctx.project, KIND, ident, db=db, what="Files")[0]
        entry = file.get("_uploads", {}).pop(upload_id, None)
        if entry is None:
            raise bad_request(f"Unknown uploadId {upload_id!r} for file {file['id']}")
        parts = upload_parts(entry)
        if upload_expired(entry):
            raise bad_request(f"Upload {upload_id!r} has expired: start a new upload of file {file['id']}")
        folder = ctx.store.parts_dir(ctx.project, file["id"], upload_id)
        missing = [i for i in range(parts) if not (folder / str(i)).exists()]
        if missing:
            raise bad_request(f"Cannot complete the upload: parts {missing[:10]} were not uploaded")
        _drop_content(ctx, file)  # the old content and any other unfinished upload
        file["_content"] = {"parts": parts, "uploadId": upload_id}
        _mark_uploaded(file)
        ctx.store.save(db, ctx.project, KIND, file)
    return {}


def upload_parts(entry) -> int:
    return entry["parts"] if isinstance(entry, dict) else entry  # older data dirs stored the count alone


def upload_expired(entry) -> bool:
    return isinstance(entry, dict) and entry["expires"] < time.time()


def _mark_uploaded(file: dict) -> None:
    file["uploaded"] = True
    file["uploadedTime"] = now_ms()


def _upload_gone(upload_id: str) -> CDFError:
    return bad_request(f"Unknown or completed uploadId {upload_id!r}: the file was overwritten or its upload was "
                       "completed by another upload")


@routes.put("/_local/files/<project>/<int:file_id>/content", root=True, auth=False)
def put_content(ctx: Ctx, file_id: int) -> Response:
    project = ctx.project
    upload_id, token = ctx.args.get("uploadId", ""), ctx.args.get("token", "")
    part, expires = _int_arg(ctx, "part", 0), _int_arg(ctx, "exp", 0)
    if not hmac.compare_digest(_sign(ctx, "up", file_id, upload_id or token, part, expires), ctx.args.get("sig", "")):
        raise CDFError(403, "Upload URL signature is invalid")
    if expires < time.time():
        raise CDFError(403, "Upload URL has expired: ask for a new upload link")
    file = ctx.store.get(project, KIND, file_id)
    if file is None:
        raise CDFError(404, f"File {file_id} no longer exists")
    length = ctx.request.content_length
    stream = ctx.request.stream
    if upload_id:
        if upload_id not in file.get("_uploads", {}):
            raise _upload_gone(upload_id)
        # Written without the store's lock (it streams), so the upload may be dropped meanwhile (the file overwritten,
        # or another upload of it completed): answer as for a dropped upload, with no part left behind.
        folder = ctx.store.parts_dir(project, file_id, upload_id)
        try:
            ctx.store.write_blob(folder / str(part), stream, length)
        except FileNotFoundError:  # the folder was removed while the part was written
            shutil.rmtree(folder, ignore_errors=True)
            raise _upload_gone(upload_id) from None
        current = ctx.store.get(project, KIND, file_id)
        if current is None or upload_id not in current.get("_uploads", {}):
            shutil.rmtree(folder, ignore_errors=True)
            raise _upload_gone(upload_id)
        return Response(status=200)
    if file.get("_uploadToken") != token:
        if (file.get("_content") or {}).get("token") == token and _same_content(ctx, file, stream, length):
            return Response(status=200)  # a retry of the PUT that landed (its answer was lost): nothing changes
        raise _link_used(file_id)
    target = single_blob(ctx.store, project, file_id, token)
    ctx.store.write_blob(target, stream, length)
    with ctx.store.write() as db:
        file = ctx.store.get(project, KIND, file_id, db)
        if file is None or file.get("_uploadToken") != token:  # deleted, overwritten or used meanwhile
            target.unlink(missing_ok=True)
            if file is None:
                raise CDFError(404, f"File {file_id} was deleted during the upload")
            raise _link_used(file_id)
        old = file.get("_content")
        del file["_uploadToken"]
        file["_content"] = {"single": True, "token": token}
        _mark_uploaded(file)
        ctx.store.save(db, project, KIND, file)
    if old:
        for path in content_paths(ctx.store, project, {"id": file_id, "_content": old}):
            path.unlink(missing_ok=True)
        if old.get("parts"):
            shutil.rmtree(ctx.store.parts_dir(project, file_id, old["uploadId"]), ignore_errors=True)
    return Response(status=200)


def _same_content(ctx: Ctx, file: dict, stream, length: int | None) -> bool:
    """Whether the request body equals the file's content (streamed to a scratch blob: disk, not memory)."""
    landed = single_blob(ctx.store, ctx.project, file["id"], file["_content"]["token"])
    scratch = landed.with_name(f"{landed.name}.retry-{uuid.uuid4().hex}")
    try:
        ctx.store.write_blob(scratch, stream, length)
        return filecmp.cmp(scratch, landed, shallow=False)
    except OSError:
        return False
    finally:
        scratch.unlink(missing_ok=True)


def _int_arg(ctx: Ctx, name: str, default: int) -> int:
    value = ctx.args.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"Query parameter '{name}' must be an integer, got {value[:40]!r}") from None


def _link_used(file_id: int) -> CDFError:
    return CDFError(403, f"This upload URL of file {file_id} was already used or was replaced by a newer one (an "
                         "upload URL serves one upload): ask for a new upload link")


# -- reading ----------------------------------------------------------------------------------------------
@routes.post("/files/downloadlink")
def download_link(ctx: Ctx) -> dict:
    idents = identifiers(ctx.body)
    found = ctx.store.resolve(ctx.project, KIND, idents, what="Files")
    result = []
    for ident, file in zip(idents, found):
        if not file.get("uploaded"):
            raise bad_request(f"File {file['id']} has no content yet (uploaded is false): upload it first")
        url = ctx.url(f"/_local/files/{ctx.project}/{file['id']}/content?sig={_sign(ctx, 'down', file['id'])}")
        result.append({**ident, "downloadUrl": url})
    return {"items": result}


@routes.get("/_local/files/<project>/<int:file_id>/content", root=True, auth=False)
def get_content(ctx: Ctx, file_id: int) -> Response:
    project = ctx.project
    if not hmac.compare_digest(_sign(ctx, "down", file_id), ctx.args.get("sig", "")):
        raise CDFError(403, "Download URL signature is invalid")
    file = ctx.store.get(project, KIND, file_id)
    if file is None or not file.get("uploaded"):
        raise CDFError(404, f"File {file_id} has no content")
    paths = content_paths(ctx.store, project, file)
    size = sum(p.stat().st_size for p in paths)
    return Response(_stream(paths), headers={"Content-Length": str(size)}, mimetype="application/octet-stream",
                    direct_passthrough=True)


def content_paths(store, project: str, file: dict) -> list[Path]:
    """The blobs holding a file's bytes, in order (one, or the parts of a multipart upload)."""
    content = file.get("_content") or {}
    if content.get("parts"):
        folder = store.parts_dir(project, file["id"], content["uploadId"])
        return [folder / str(i) for i in range(content["parts"])]
    return [single_blob(store, project, file["id"], content.get("token"))]


def _stream(paths: list[Path]):
    # Open every part first: a concurrent overwrite may unlink them, but open handles keep the bytes readable.
    handles = [open(p, "rb") for p in paths]
    try:
        for handle in handles:
            while chunk := handle.read(CHUNK):
                yield chunk
    finally:
        for handle in handles:
            handle.close()


# -- changing and deleting ----------------------------------------------------------------------------------
FILES.serve(routes, "/files", "file_id", ("byids", "one", "list", "list_get", "update", "delete"),
            validate=lambda ctx, body, where: validate_file(body, where), on_delete=lambda ctx, f: _drop_content(ctx, f))


def _drop_content(ctx: Ctx, file: dict) -> None:
    content = file.pop("_content", None) or {}
    if content.get("parts"):
        shutil.rmtree(ctx.store.parts_dir(ctx.project, file["id"], content["uploadId"]), ignore_errors=True)
    else:
        single_blob(ctx.store, ctx.project, file["id"], content.get("token")).unlink(missing_ok=True)
    for upload_id in file.get("_uploads", {}):
        shutil.rmtree(ctx.store.parts_dir(ctx.project, file["id"], upload_id), ignore_errors=True)
    file.pop("_uploads", None)
