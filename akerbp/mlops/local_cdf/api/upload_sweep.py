"""At start, remove file content no upload can finish or read: the parts of expired multipart uploads and blobs no
file refers to (a server killed mid-upload leaves both; its half-written `.tmp` blobs are Store's to remove).

Safe beside a live server sharing the data dir: the blob folder is listed BEFORE the store is read, and every blob or
parts folder is recorded in the store (a pending upload token, a pending multipart upload, a file's content) before
its first byte is written, so whatever is listed and not referenced afterwards belongs to no upload anyone can finish.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .files import KIND, content_paths, single_blob, upload_expired
from ..store import Store


def sweep(store: Store) -> list[Path]:
    """Remove what no upload can finish; the paths removed."""
    listed = [p for folder in store.blob_dir.glob("*") if folder.is_dir()
              for p in folder.iterdir() if not p.name.startswith(".")]
    _forget_expired_uploads(store)
    referenced = _referenced(store)
    removed = []
    for path in listed:
        if path in referenced:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _files(store: Store, project: str) -> list[dict]:
    return store.query(project, KIND)[0]


def _forget_expired_uploads(store: Store) -> None:
    """An expired multipart upload can no longer be completed (its URLs expired with it): drop its record."""
    for project in store.projects():
        for file in _files(store, project):
            if not any(upload_expired(e) for e in file.get("_uploads", {}).values()):
                continue
            with store.write() as db:
                current = store.get(project, KIND, file["id"], db)
                if current is None:
                    continue
                uploads = current.get("_uploads", {})
                for upload_id in [u for u, e in uploads.items() if upload_expired(e)]:
                    del uploads[upload_id]
                store.save(db, project, KIND, current, touch=False)


def _referenced(store: Store) -> set[Path]:
    paths: set[Path] = set()
    for project in store.projects():
        for file in _files(store, project):
            if file.get("_content"):
                content = file["_content"]
                if content.get("parts"):
                    paths.add(store.parts_dir(project, file["id"], content["uploadId"]))
                else:
                    paths.update(content_paths(store, project, file))
            for upload_id in file.get("_uploads", {}):
                paths.add(store.parts_dir(project, file["id"], upload_id))
            if file.get("_uploadToken"):
                paths.add(single_blob(store, project, file["id"], file["_uploadToken"]))
    return paths
