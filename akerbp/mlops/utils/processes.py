"""Stopping a subprocess together with everything it started (it runs in a session of its own)."""
from __future__ import annotations

import os
import signal
import subprocess


def kill_session(process: subprocess.Popen, wait: bool = True) -> None:
    """SIGKILL the process group of a process started with start_new_session=True: a hanging test or handler and
    any helper process it started all stop."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if wait:
        process.wait()
