"""What a served local CDF announces in its data dir (server.json), read with the standard library alone: a command
that talks to a served local CDF finds it without importing the server (werkzeug, the API and the runtime: ~0.1 s
of every such process)."""
from __future__ import annotations

import json
import os
from pathlib import Path

SERVER_FILE = "server.json"


def server_info(data_dir: str | Path) -> dict | None:
    """The announced record (pid, base_url, started, restricted, ...) of a live server for this data dir, if one
    answers."""
    import urllib.request

    try:
        info = json.loads((Path(data_dir) / SERVER_FILE).read_text())
        os.kill(int(info["pid"]), 0)
        with urllib.request.urlopen(info["base_url"] + "/_local/health", timeout=1) as response:
            if response.status == 200:
                return info
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None
