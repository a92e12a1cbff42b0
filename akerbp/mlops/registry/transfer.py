"""Moving a version's archive between disk and CDF Files with progress reports, one part of it in memory at most.

cognite-sdk's files.upload and files.download_to_path report no progress, so:
- Upload goes through the SDK's public multipart API (files.multipart_upload_session), one part after the other,
  each read from the archive and handed over as bytes, and counted once CDF has taken it. Bytes, not a file
  handle: the SDK resends a part whose PUT got a retryable status (429, 502, 503, 504), which it cannot do with a
  file handle (its own files.upload then fails with "Too little data for declared Content-Length"). Memory holds
  one part: PART_SIZE up to 250 parts (2 GiB), size / 250 above. Creating the session is the claim of the external
  id: CogniteDuplicatedError comes from upload_session(), before any content moves.
- Download is files.download_to_path, which streams chunks to the target file; while it runs, a watcher thread
  reports the size of that file every WATCH_EVERY seconds (display only: the download itself is not timed).

Part of the registry package bundled into deployed CDF Functions: stdlib, cognite-sdk, the errors and the archive
module only.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from akerbp.mlops.errors import MlopsError
from akerbp.mlops.registry.archive import sha256_file
from akerbp.mlops.registry.errors import ChecksumMismatch

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import FileMetadata, FileMultipartUploadSession

WATCH_EVERY = 0.25  # seconds between two reports of a download's size on disk
# Multipart limits of the Files API (initmultipartupload): 1 to 250 parts, each but the last of 5 MiB to 4000 MiB.
# Parts of PART_SIZE (small enough for progress every few seconds on a slow link) unless that needs more than
# MAX_PARTS.
MIB = 1024 * 1024
PART_SIZE, MAX_PART_SIZE, MAX_PARTS = 8 * MIB, 4000 * MIB, 250

Progress = Callable[[str, int, int, bool], None]
"""progress(what, done, total, finished): `what` names the step ("uploading m/dev/3"); done and total count bytes
(total 0 when unknown). Called with done 0 when a step starts, as bytes move -- possibly from another thread, so
the receiver must be thread safe --, and once with finished=True when the step ends, successfully or not."""


class Step:
    """One step reported to a Progress callback (none: nothing is reported): started on enter, finished on exit."""

    def __init__(self, progress: Progress | None, what: str, total: int = 0) -> None:
        self.progress, self.what, self.total, self.done = progress, what, total, 0
        self._lock = threading.Lock()

    def __enter__(self) -> Step:
        self._report(False)
        return self

    def __exit__(self, *exc: object) -> None:
        self._report(True)

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
        self._report(False)

    def update(self, done: int, total: int | None = None) -> None:
        with self._lock:
            self.done = done
            self.total = self.total if total is None else total
        self._report(False)

    def _report(self, finished: bool) -> None:
        if self.progress is not None:
            self.progress(self.what, self.done, self.total, finished)


def _parts(size: int) -> tuple[int, int]:
    """(part size, number of parts) for a file of `size` bytes."""
    part_size = max(PART_SIZE, -(-size // MAX_PARTS))
    if part_size > MAX_PART_SIZE:
        raise MlopsError(f"the archive is {size} bytes: CDF Files takes at most {MAX_PARTS * MAX_PART_SIZE} bytes")
    return part_size, max(1, -(-size // part_size))


def upload_session(client: CogniteClient, path: Path, *, overwrite: bool, **fields: Any
                   ) -> FileMultipartUploadSession:
    """Create the file (fields as files.multipart_upload_session takes them): with overwrite=False this claims its
    external id or raises CogniteDuplicatedError. No content moves yet: send() does that."""
    _, parts = _parts(Path(path).stat().st_size)
    return client.files.multipart_upload_session(parts=parts, overwrite=overwrite, **fields)


def send(session: FileMultipartUploadSession, path: Path, what: str, progress: Progress | None) -> FileMetadata:
    """Stream path into the file of an upload_session, part by part; returns its FileMetadata (as created)."""
    size = Path(path).stat().st_size
    part_size, parts = _parts(size)
    with Step(progress, what, size) as step, session, open(path, "rb") as archive:
        for part in range(parts):
            content = archive.read(part_size)
            session.upload_part(part, content)
            step.add(len(content))
    return session.file_metadata


def download_verified(client: CogniteClient, f: FileMetadata, path: Path, progress: Progress | None) -> None:
    """Stream a version's archive to path and check it against the sha256 recorded at upload."""
    md = f.metadata or {}
    with Step(progress, f"downloading {f.external_id}", int(md.get("size") or 0)) as step:
        _download(client, f.id, Path(path), step)
    actual = sha256_file(path)
    if actual != md.get("sha256"):
        raise ChecksumMismatch(
            f"checksum mismatch for {f.external_id}: its content has sha256 {actual[:16]}..., its metadata records "
            f"{(md.get('sha256') or 'none')[:16]}...: the archive was modified after upload. Nothing was extracted; "
            "upload or promote a new version"
        )


def _download(client: CogniteClient, file_id: int, path: Path, step: Step) -> None:
    if step.progress is None:
        client.files.download_to_path(path, id=file_id)
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(WATCH_EVERY):
            step.update(_size_on_disk(path))

    watcher = threading.Thread(target=watch, name="mlops-download-progress", daemon=True)
    watcher.start()
    try:
        client.files.download_to_path(path, id=file_id)
    finally:
        stop.set()
        watcher.join()
        step.update(_size_on_disk(path))


def _size_on_disk(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # not created yet
        return 0
