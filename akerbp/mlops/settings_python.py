"""Reading mlops_settings.py in a child process with a time and memory budget, so nothing the file does ends or
hangs the command that reads it.

A settings file is Python: `sys.exit(0)` or `os._exit(0)` in it made `mlops settings validate` and `mlops deploy`
exit 0 having deployed nothing (a green CI), and `while True: pass` hung them. The child (`sys.executable`, the
same interpreter) runs the file (settings_capture), writes what `models` holds as JSON to a file and ends with
os._exit; this module turns anything else (an exit, a signal, the timeout, no result) into an UnreadableSettings
naming the file. Hostile files are not sandboxed: the file runs with the user's rights and environment, as any code
in the repo does; the budget protects CI from accidents.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from akerbp.mlops.settings_capture import KINDS, MEMORY_VAR, Kind, decode

TIMEOUT_VAR = "MLOPS_SETTINGS_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_MB = 2048
OUTPUT_LIMIT_BYTES = 16 * 1024 * 1024  # what the file may print (and the result size): RLIMIT_FSIZE in the child
SHOWN_OUTPUT_BYTES = 4096


def budget() -> tuple[float, int]:
    """(seconds, megabytes) a settings file may take, from MLOPS_SETTINGS_TIMEOUT / MLOPS_SETTINGS_MEMORY_MB."""
    from akerbp.mlops.errors import UsageError

    def positive(var: str, default, kind):
        raw = os.environ.get(var, "").strip()
        try:
            value = kind(raw) if raw else default
        except ValueError:
            value = 0
        if not 0 < value < float("inf"):
            raise UsageError(f"{var}={raw!r} is not a positive number")
        return value

    return positive(TIMEOUT_VAR, DEFAULT_TIMEOUT_S, float), positive(MEMORY_VAR, DEFAULT_MEMORY_MB, int)


def read(path: Path, name: str, variable: str = "models") -> list:
    """The models of a .py settings file (or what else `variable` names: settings_capture.KINDS, e.g. the
    automations of mlops_automations.py) as RawModels; UnreadableSettings when it gives none, whatever it did."""
    import tempfile

    from akerbp.mlops.settings_files import RawModel, UnreadableSettings

    seconds, megabytes = budget()
    with tempfile.TemporaryDirectory(prefix="mlops-settings-") as tmp:
        result_path, output_path = Path(tmp) / "result.json", Path(tmp) / "output.txt"
        code, timed_out = _run_child(path, name, result_path, output_path, seconds, megabytes, variable)
        output = _tail(output_path)
        result = _result(result_path) if code == 0 and not timed_out else None
    if result is None:
        raise UnreadableSettings(_why_no_result(name, code, timed_out, seconds, megabytes, output, KINDS[variable]))
    if "error" in result:
        raise UnreadableSettings(result["error"] + _output_note(output))
    _show(output)
    return [RawModel(decode(m["data"]), m["line"], {tuple(k): line for k, line in m["keys"]})
            for m in result["items"]]


# The child limits itself before anything else runs (setting limits in a preexec_fn is unsafe when the parent has
# threads, as a deploy does): the budget applies to the settings file and every process it starts.
_BOOT = (
    "import resource, sys\n"
    "def cap(kind, value):\n"  # never above a limit this process already has (ulimit -v in CI, say)
    "    soft, hard = resource.getrlimit(kind)\n"
    "    value = value if hard == resource.RLIM_INFINITY else min(value, hard)\n"
    "    resource.setrlimit(kind, (value, value))\n"
    "cap(resource.RLIMIT_AS, int(sys.argv[5]) * 1024 * 1024)\n"
    f"cap(resource.RLIMIT_FSIZE, {OUTPUT_LIMIT_BYTES})\n"
    "cap(resource.RLIMIT_CORE, 0)\n"
    "if sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"  # as the CLI: the file's folder is added later
    "try:\n"
    "    from akerbp.mlops import settings_capture\n"
    "except ImportError:\n"  # a checkout that is not installed: where this module came from
    "    sys.path.append(sys.argv[1])\n"
    "    from akerbp.mlops import settings_capture\n"
    "settings_capture.child(*sys.argv[2:6], sys.argv[6])\n"
)


def _run_child(path: Path, name: str, result_path: Path, output_path: Path, seconds: float,
               megabytes: int, variable: str) -> tuple[int | None, bool]:
    """(exit code or -signal, timed out) of the child reading `path`; its process group is gone afterwards."""
    import signal
    import subprocess

    framework_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    with open(output_path, "wb") as output:
        proc = subprocess.Popen(  # -u: what the file printed before an os._exit() is in its output, not lost in a buffer
            [sys.executable, "-u", "-c", _BOOT, framework_root, str(path), name, str(result_path), str(megabytes),
             variable],
            stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True,
        )
    try:
        return _wait(proc, seconds), False
    except subprocess.TimeoutExpired:
        return None, True
    finally:
        if proc.poll() is None:  # timed out, or the reader was interrupted: the file's processes go with it
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def _wait(proc, seconds: float) -> int:
    """proc's exit code, woken the moment it ends: Popen.wait(timeout) polls with sleeps of up to 50 ms."""
    import select
    import subprocess

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3
        return proc.wait(timeout=seconds)
    try:
        if not select.select([fd], [], [], seconds)[0]:
            raise subprocess.TimeoutExpired(proc.args, seconds)
        return proc.wait()
    finally:
        os.close(fd)


def _result(path: Path) -> dict | None:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and ("items" in result or "error" in result) else None


def _tail(path: Path) -> str:
    """The end of what the file printed, as text."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - SHOWN_OUTPUT_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _show(output: str) -> None:
    """What the settings file printed goes to stderr (never stdout: --json output stays JSON), secrets masked."""
    if output.strip():
        from akerbp.mlops.utils.logger import mask

        sys.stderr.write(mask(output if output.endswith("\n") else output + "\n"))
        sys.stderr.flush()


def _output_note(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()][-10:]
    if not lines:
        return ""
    from akerbp.mlops.utils.logger import mask

    return "\n    its last output:\n" + "\n".join(f"      {mask(line)[:300]}" for line in lines)


def _why_no_result(name: str, code: int | None, timed_out: bool, seconds: float, megabytes: int, output: str,
                   kind: Kind) -> str:
    import signal

    advice = kind.advice
    if timed_out:
        why = (f"did not finish loading within {seconds:g} s ({TIMEOUT_VAR}): {advice}; look for a loop or a slow "
               "call at its top level")
    elif code is not None and code < 0:
        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = f"signal {-code}"
        why = f"was killed by {signame} while loading"
        if -code == signal.SIGXFSZ:
            why += (f": it wrote more than {OUTPUT_LIMIT_BYTES // (1024 * 1024)} MB to one file (its output, or its "
                    f"{kind.variable} as JSON)")
        elif "MemoryError" in output or "Cannot allocate memory" in output or -code in (signal.SIGKILL, signal.SIGABRT):
            why += f" (its memory budget is {megabytes} MB: {MEMORY_VAR})"
    else:
        why = (f"ended its process (exit code {code}) before its {kind.variable} were read: {advice}; remove the "
               "os._exit()/exit call (or whatever ends the process)")
    return f"{name}: {why}{_output_note(output)}"
