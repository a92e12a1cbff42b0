"""Who did something and from which commit: stamped on model versions, deployments and audit events.

Bundled into deployed functions (the training service uploads versions): stdlib only.
"""
from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path


def who() -> str:
    """The Bitbucket user who ran the step (or the pipeline run), else the local user, else "unknown"."""
    if os.environ.get("BITBUCKET_STEP_TRIGGERER_UUID"):
        return os.environ["BITBUCKET_STEP_TRIGGERER_UUID"]
    if os.environ.get("BITBUCKET_BUILD_NUMBER"):
        repo = os.environ.get("BITBUCKET_REPO_FULL_NAME", "")
        return f"bitbucket-pipelines:{repo}#{os.environ['BITBUCKET_BUILD_NUMBER']}"
    for var in ("USER", "LOGNAME", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers, CDF Functions)
        return "unknown"


def git_commit(folder: Path | None = None, mark_dirty: bool = False) -> str:
    """BITBUCKET_COMMIT, else HEAD of the git checkout holding `folder` (default: the working directory), with
    '+dirty' when asked and the tracked files have uncommitted changes; "" outside git (e.g. in a CDF Function)."""
    if os.environ.get("BITBUCKET_COMMIT"):
        return os.environ["BITBUCKET_COMMIT"]
    cwd = folder if folder is not None and Path(folder).is_dir() else None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return ""
        dirty = mark_dirty and subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True,
            timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("+dirty" if dirty else "")
