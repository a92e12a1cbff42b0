"""Deterministic tar.gz archives of artifact folders, and their safe extraction.

Deterministic so that the same folder content always gives the same bytes and so the same sha256: a registry can
then tell "same model" from "different model" by hash alone (promotion idempotence, tamper detection). Safe
extraction because an archive in CDF Files can be replaced by anyone with write access to the data set.

Part of the registry package bundled into deployed CDF Functions: stdlib and the errors only.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PureWindowsPath
from typing import Callable

from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.registry.errors import UnsafeArchive

CHUNK = 1024 * 1024
FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755


class _HashingWriter:
    """File wrapper hashing what is written, so the archive is read from disk only once."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self):
        self.raw.flush()


class _CountingReader:
    """Source file wrapper reporting each read, so archiving a large folder can show progress."""

    def __init__(self, raw, counted: Callable[[int], None]):
        self.raw, self.counted = raw, counted

    def read(self, size=-1):
        data = self.raw.read(size)
        self.counted(len(data))
        return data


def sha256_file(path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _collect(folder: Path) -> list[tuple[str, Path, bool, int]]:
    """(archive name, path, is_dir, size) for every entry, sorted by name; file symlinks are stored as their
    content."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in dirnames:
            path = here / name
            if path.is_symlink():
                raise UsageError(
                    f"artifact folder {folder}: {path} is a symbolic link to a folder; copy the folder instead "
                    "(links are not archived)"
                )
            entries.append((path.relative_to(folder).as_posix(), path, True, 0))
        for name in filenames:
            path = here / name
            try:
                st = path.stat()  # follows file symlinks: their content is archived
            except OSError as e:
                raise UsageError(f"artifact folder {folder}: cannot read {path}: {e.strerror}") from e
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(
                    f"artifact folder {folder}: {path} is not a regular file (socket, pipe or device); remove it"
                )
            entries.append((path.relative_to(folder).as_posix(), path, False, st.st_size))
    entries.sort(key=lambda e: e[0])
    return entries


def archive_folder(folder, archive_path, progress: Callable[[int, int], None] | None = None) -> tuple[str, int, int]:
    """Write folder as a deterministic tar.gz; return (sha256, size in bytes, number of files).

    Sorted entries, mtime 0, uid/gid 0 without names, modes 0644/0755 (only the executable bit is kept), gzip
    header without file name or time: the bytes depend on names, contents and executable bits only.
    progress(done, total) is told the bytes of the folder's files read so far, out of their total.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"artifact folder {folder} does not exist or is not a folder")
    entries = _collect(folder)
    files, done, total = 0, 0, sum(e[3] for e in entries)

    def counted(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if progress is not None:
            progress(done, total)

    counted(0)
    with open(archive_path, "wb") as raw:
        writer = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=writer, mtime=0, compresslevel=6) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, path, is_dir, _ in entries:
                    info = tarfile.TarInfo(name)
                    info.mtime = 0
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if is_dir:
                        info.type = tarfile.DIRTYPE
                        info.mode = DIR_MODE
                        tar.addfile(info)
                        continue
                    with open(path, "rb") as f:
                        st = os.fstat(f.fileno())
                        info.size = st.st_size
                        info.mode = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE
                        tar.addfile(info, _CountingReader(f, counted))
                    files += 1
    return writer.sha.hexdigest(), writer.size, files


def _refusal(label: str, member: str, reason: str) -> UnsafeArchive:
    return UnsafeArchive(f"refusing to extract {label}: entry {member!r} {reason}; nothing was written")


def _check_member(member: tarfile.TarInfo, label: str) -> None:
    """Refuse anything that could write outside the target folder or create special files."""
    name = member.name
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PureWindowsPath(name).root:
        raise _refusal(label, name, "has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise _refusal(label, name, "contains '..'")
    if member.ischr() or member.isblk() or member.isfifo():
        raise _refusal(label, name, "is a device or pipe")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise _refusal(label, name, f"has an unsupported type {member.type!r}")
    if member.issym() or member.islnk():
        link = member.linkname
        if link.startswith(("/", "\\")) or PureWindowsPath(link).drive:
            raise _refusal(label, name, f"links to the absolute path {link!r}")
        # Symlink targets are relative to the link's folder, hard link targets to the archive root.
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, link))
        if resolved == ".." or resolved.startswith("../"):
            raise _refusal(label, name, f"links to {link!r}, outside the folder")


# What one artifact archive may extract to (a 2 MB tarball of zeros can hold gigabytes): a stated limit, changed with
# MLOPS_ARTIFACT_MAX_BYTES / MLOPS_ARTIFACT_MAX_FILES for larger models.
MAX_EXTRACT_BYTES = 4 * 1024**3
MAX_EXTRACT_FILES = 100_000


def _check_totals(members: list[tarfile.TarInfo], label: str) -> None:
    """Refuse an archive larger than the caps when extracted, before anything is written (tar sizes are exact: each
    member's data is as long as its header says)."""
    max_bytes = int(os.environ.get("MLOPS_ARTIFACT_MAX_BYTES") or MAX_EXTRACT_BYTES)
    max_files = int(os.environ.get("MLOPS_ARTIFACT_MAX_FILES") or MAX_EXTRACT_FILES)
    if len(members) > max_files:
        raise UnsafeArchive(f"refusing to extract {label}: it has {len(members)} entries, the limit is {max_files} "
                         "(set MLOPS_ARTIFACT_MAX_FILES to allow more); nothing was written")
    total = sum(m.size for m in members if m.isreg())
    if total > max_bytes:
        raise UnsafeArchive(f"refusing to extract {label}: it extracts to {total} bytes, the limit is {max_bytes} "
                         "(set MLOPS_ARTIFACT_MAX_BYTES to allow more); nothing was written")


def extract_archive(archive_path, target_folder, label: str = "archive") -> int:
    """Extract into target_folder (absent or empty) all or nothing; return the number of entries.

    Every entry is checked before anything is written, extraction goes to a temporary folder next to the target
    (same file system) that is renamed into place at the end. Extracted files get the current time as mtime: the
    archive's mtime 0 would break tools such as zipfile (no timestamps before 1980).
    """
    target = Path(target_folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"target folder {target} exists and is not empty; choose a new or empty folder")
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive_path, mode="r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, label)
            _check_totals(members, label)
            now = int(time.time())
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=parent))
            try:
                # The stdlib "data" filter repeats the checks above (defence in depth) and drops special bits.
                tar.extractall(tmp, filter=lambda m, p: tarfile.data_filter(m, p).replace(mtime=now, deep=False))
                if target.exists():
                    target.rmdir()
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except tarfile.FilterError as e:
        raise UnsafeArchive(f"refusing to extract {label}: {e}; nothing was written") from e
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise MlopsError(f"cannot extract {label} into {target}: {e}") from e
    return len(members)
