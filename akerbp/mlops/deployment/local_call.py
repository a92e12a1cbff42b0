"""Call a function folder's handler the way CDF would, in a fresh Python process, before deploying it (deploy-time:
the deploy's service test uses it; nothing of it is bundled).

The subprocess runs with cwd = the folder, the folder first on sys.path, COGNITE_FUNCTION_RUNTIME=true, and
`handle` called with the arguments it names (client=None: there is no CDF session). Like in CDF, only the
akerbp.mlops copy bundled in the folder can be imported: a module the deploy step forgot to bundle fails here,
not after deployment. Data, secrets and the response travel through files in a private temporary folder, never
through the command line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from akerbp.mlops.errors import MlopsError
from akerbp.mlops.function_folder import HANDLER_FILE
from akerbp.mlops.services.masking import mask  # the function's own masking, so the logs read as in CDF
from akerbp.mlops.utils.processes import kill_session

TAIL_CHARS = 4000
# Never in a CDF function's environment: the deployer's CDF credentials, and secrets (every model's MLOPS_SECRET_*).
# A function gets its own secrets through `secrets` and its env vars through `env_vars`, as in CDF.
WITHHELD = ("COGNITE_", "MLOPS_SECRET_")

# Runs in the subprocess: stdlib only, nothing from the caller's environment.
BOOTSTRAP = r'''
import importlib.abc, importlib.machinery, importlib.util, inspect, json, sys
from pathlib import Path

call = json.loads(Path(sys.argv[1]).read_text())
folder = Path.cwd().resolve()
sys.path.insert(0, str(folder))


def _inside(location):
    return location is not None and Path(location).resolve().is_relative_to(folder)


class BundledOnly(importlib.abc.MetaPathFinder):
    """In CDF only the bundled akerbp.mlops exists: refuse any other copy (an installed or editable one)."""

    def find_spec(self, name, path=None, target=None):
        if name != "akerbp.mlops" and not name.startswith("akerbp.mlops."):
            return None
        search = [str(folder / "akerbp")] if name == "akerbp.mlops" else path
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        locations = [spec.origin] if spec is not None and spec.origin else list(
            (spec.submodule_search_locations or []) if spec is not None else [])
        if not locations or not all(_inside(loc) for loc in locations):
            raise ModuleNotFoundError(f"No module named {name!r} in the function folder (not bundled)", name=name)
        return spec


sys.meta_path.insert(0, BundledOnly())
spec = importlib.util.spec_from_file_location("handler", folder / call["function_path"])
module = importlib.util.module_from_spec(spec)
sys.modules["handler"] = module
spec.loader.exec_module(module)
offered = {
    "data": call["data"],
    "client": None,
    "secrets": call["secrets"],
    "function_call_info": {"function_id": None, "call_id": None, "local_call": True},
}
names = list(inspect.signature(module.handle).parameters)
unknown = [n for n in names if n not in offered]
if unknown:
    raise TypeError(f"handle() takes {unknown}, but CDF only offers {list(offered)}")
response = module.handle(**{n: offered[n] for n in names})
Path(call["response_path"]).write_text(json.dumps(response, allow_nan=False))
'''


class LocalCallError(MlopsError):
    """The handler crashed, timed out or returned something CDF could not send back."""


@dataclass
class LocalCall:
    response: dict
    stdout: str
    stderr: str
    seconds: float


def run_handler(folder: Path, data, secrets: dict | None = None, timeout: float = 600.0,
                function_path: str = HANDLER_FILE, env_vars: dict | None = None) -> dict:
    """The JSON response of the folder's handler for `data`; LocalCallError if it crashes or times out."""
    return call_handler(folder, data, secrets, timeout, function_path, env_vars).response


def call_handler(folder: Path, data, secrets: dict | None = None, timeout: float = 600.0,
                 function_path: str = HANDLER_FILE, env_vars: dict | None = None) -> LocalCall:
    """Like run_handler, with the call's logs (stdout, stderr: secrets masked) and duration. `env_vars` are the
    function's envVars, set as CDF sets them; COGNITE_* and MLOPS_SECRET_* of this process are withheld, so a
    model that reads them fails here as it would in CDF."""
    folder = Path(folder).resolve()
    if not (folder / function_path).is_file():
        raise LocalCallError(f"no {function_path} in {folder}: not a function folder")
    with tempfile.TemporaryDirectory(prefix="mlops-local-call-") as tmp:
        call_file, response_file = Path(tmp) / "call.json", Path(tmp) / "response.json"
        call_file.write_text(json.dumps({
            "data": data,
            "secrets": secrets,
            "function_path": function_path,
            "response_path": str(response_file),
        }))
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP") and not k.startswith(WITHHELD)}
        env.update(env_vars or {})
        env["COGNITE_FUNCTION_RUNTIME"] = "true"
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep __pycache__ out of the folder that gets zipped
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP, str(call_file)],
            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(process, wait=False)  # its own session: the handler and anything it started
            stdout, stderr = process.communicate()
            raise LocalCallError(
                f"the handler in {folder} did not answer within {timeout:g} s"
                f"{_tail(stderr, secrets)}"
            ) from None
        seconds = time.monotonic() - started
        stdout, stderr = mask(stdout, secrets), mask(stderr, secrets)
        if process.returncode != 0 or not response_file.is_file():
            raise LocalCallError(
                f"the handler in {folder} crashed (exit code {process.returncode}){_tail(stderr, None)}"
            )
        return LocalCall(json.loads(response_file.read_text()), stdout, stderr, seconds)


def _tail(text: str | None, secrets) -> str:
    text = mask(text or "", secrets).strip()
    if not text:
        return "; it wrote nothing to stderr"
    if len(text) > TAIL_CHARS:
        text = "..." + text[-TAIL_CHARS:]
    return f"; the end of its stderr:\n{text}"
