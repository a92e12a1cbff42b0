"""Reading mlops_settings.py in a child process with a time and memory budget, so nothing the file does ends or
hangs the command that reads it.

A settings file is Python: `sys.exit(0)` or `os._exit(0)` in it made `mlops settings validate` and `mlops deploy`
exit 0 having deployed nothing (a green CI), and `while True: pass` hung them. The child (`sys.executable`, the
same interpreter) runs the file, then writes what `models` holds as JSON to a file and ends with os._exit; the
parent turns anything else (an exit, a signal, the timeout, no result) into an UnreadableSettings naming the file.

The child imports only the standard library and this module: `from akerbp.mlops import ModelSettings` gets a
stand-in that records its keywords (the parent validates them, as for YAML), so reading costs a Python start-up,
not pydantic's import. Values JSON cannot carry (a Path, a set, an object whose repr raises) travel as stand-ins
that keep their repr, so validation names them as it would the originals. Hostile files are not sandboxed: the file
runs with the user's rights and environment, as any code in the repo does; the budget protects CI from accidents.
"""
from __future__ import annotations

import contextvars
import json
import math
import os
import sys

TYPE_CHECKING = False  # typing's import alone is 5 ms of the child's start-up
if TYPE_CHECKING:
    from pathlib import Path

# The child imports this module first: only what it needs is imported here (each import is start-up time).

TIMEOUT_VAR = "MLOPS_SETTINGS_TIMEOUT"
MEMORY_VAR = "MLOPS_SETTINGS_MEMORY_MB"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_MB = 2048
OUTPUT_LIMIT_BYTES = 16 * 1024 * 1024  # what the file may print (and the result size): RLIMIT_FSIZE in the child
MAX_SOURCE_BYTES = 1_000_000
MAX_VALUE_DEPTH = 50
MAX_INT_DIGITS = 1000
MAX_INT_BITS = 3321  # about MAX_INT_DIGITS decimal digits
SHOWN_OUTPUT_BYTES = 4096
TAG = "$mlops"  # marks an encoded value that JSON cannot carry as is

# Set while the settings file runs: the real ModelSettings(...) records its raw input here under id(instance), so
# the loader validates every model and reports every error together, instead of stopping at the first one that fails.
pending_models: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mlops_settings_pending", default=None)


# --- the parent ------------------------------------------------------------------------------------------------------


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


def read(path: Path, name: str) -> list:
    """The models of a .py settings file as RawModels; UnreadableSettings when it gives none, whatever it did."""
    import tempfile
    from pathlib import Path

    from akerbp.mlops.settings_files import RawModel, UnreadableSettings

    seconds, megabytes = budget()
    with tempfile.TemporaryDirectory(prefix="mlops-settings-") as tmp:
        result_path, output_path = Path(tmp) / "result.json", Path(tmp) / "output.txt"
        code, timed_out = _run_child(path, name, result_path, output_path, seconds, megabytes)
        output = _tail(output_path)
        result = _result(result_path) if code == 0 and not timed_out else None
    if result is None:
        raise UnreadableSettings(_why_no_result(name, code, timed_out, seconds, megabytes, output))
    _show(output)
    if "error" in result:
        raise UnreadableSettings(result["error"] + _output_note(output))
    return [RawModel(decode(m["data"]), m["line"], {tuple(k): line for k, line in m["keys"]})
            for m in result["models"]]


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
    "    from akerbp.mlops import settings_python\n"
    "except ImportError:\n"
    "    sys.path.append(sys.argv[1])\n"
    "    from akerbp.mlops import settings_python\n"
    "settings_python.child(*sys.argv[2:])\n"
)


def _run_child(path: Path, name: str, result_path: Path, output_path: Path, seconds: float,
               megabytes: int) -> tuple[int | None, bool]:
    """(exit code or -signal, timed out) of the child reading `path`; its process group is gone afterwards."""
    import signal
    import subprocess

    framework_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    with open(output_path, "wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, framework_root, str(path), name, str(result_path), str(megabytes)],
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
    return result if isinstance(result, dict) and ("models" in result or "error" in result) else None


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


def _why_no_result(name: str, code: int | None, timed_out: bool, seconds: float, megabytes: int, output: str) -> str:
    import signal

    advice = "a settings file must only define `models`"
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
            why += f": it printed more than {OUTPUT_LIMIT_BYTES // (1024 * 1024)} MB"
        elif "MemoryError" in output or "Cannot allocate memory" in output or -code in (signal.SIGKILL, signal.SIGABRT):
            why += f" (its memory budget is {megabytes} MB: {MEMORY_VAR})"
    else:
        why = (f"ended its process (exit code {code}) before its models were read: {advice}; remove the "
               "os._exit()/exit call (or whatever ends the process)")
    return f"{name}: {why}{_output_note(output)}"


# --- values JSON cannot carry --------------------------------------------------------------------------------------


class Opaque:
    """A settings value JSON cannot carry (a Path, an object...), as the parent sees it: its type and repr only."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return self.text


def safe_repr(value) -> str:
    """repr(value), or a description when repr itself fails (a value whose __repr__ raises must not crash us)."""
    try:
        text = repr(value)
        return text if isinstance(text, str) else f"<{type(value).__name__} object>"
    except BaseException:  # noqa: BLE001 - user code
        return f"<{type(value).__name__} object whose repr() fails>"


def safe_str(value) -> str:
    """str(value), or a description when str itself fails (an exception whose __str__ raises)."""
    try:
        text = str(value)
        return text if isinstance(text, str) else safe_repr(value)
    except BaseException:  # noqa: BLE001 - user code
        return f"<{type(value).__name__} whose message cannot be shown: its __str__ fails>"


def encode(value, depth: int = 0, seen: frozenset = frozenset()):
    """`value` as JSON-able data; what JSON cannot carry exactly is tagged (decode() undoes it)."""
    try:
        if value is None or type(value) in (bool, str):
            return value
        if type(value) is int:
            return value if value.bit_length() <= MAX_INT_BITS else _opaque(value, f"<an integer of over {MAX_INT_DIGITS} digits>")
        if type(value) is float:
            return value if math.isfinite(value) else {TAG: "float", "value": repr(value)}
        for base in (int, float, str):  # subclasses (IntEnum, numpy.float64, a str Enum): their plain value
            if isinstance(value, base):
                return encode(getattr(base, f"__{base.__name__}__")(value), depth, seen)
        if id(value) in seen:
            return _opaque(value, f"<a {type(value).__name__} that contains itself>")
        if depth >= MAX_VALUE_DEPTH:
            return _opaque(value, f"<a {type(value).__name__} nested over {MAX_VALUE_DEPTH} levels deep>")
        inner = seen | {id(value)}
        if isinstance(value, dict):
            items = list(dict.items(value))
            if all(type(k) is str for k, _ in items):
                return {k: encode(v, depth + 1, inner) for k, v in items}
            return {TAG: "dict", "items": [[encode(k, depth + 1, inner), encode(v, depth + 1, inner)] for k, v in items]}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [encode(v, depth + 1, inner) for v in list(value)]
        if isinstance(value, _Recorded):
            return encode(value._mlops_raw(), depth, seen)
        if callable(getattr(type(value), "model_dump", None)):  # a pydantic model: ServiceInfo(...), ModelSettings
            raw = (pending_models.get() or {}).get(id(value))
            return encode(raw if raw is not None else value.model_dump(exclude_unset=True), depth, seen)
    except Exception:  # noqa: BLE001 - user objects (a mapping whose items() raises...): shown as what they are
        pass
    return _opaque(value, safe_repr(value))


def _opaque(value, text: str) -> dict:
    return {TAG: "opaque", "type": type(value).__name__, "repr": text[:1000]}


def decode(value):
    """The settings value encode() wrote, with Opaque stand-ins for what JSON could not carry."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(TAG)
    if kind == "float":
        return float(value["value"])
    if kind == "opaque":
        return Opaque(value["type"], value["repr"])
    if kind == "dict":
        return {_hashable(decode(k)): decode(v) for k, v in value["items"]}
    return {k: decode(v) for k, v in value.items()}


def _hashable(key):
    return key if not isinstance(key, (list, dict)) else Opaque(type(key).__name__, safe_repr(key))


# --- the child -------------------------------------------------------------------------------------------------------


class _Recorded:
    """`ModelSettings` as a settings file sees it in the child: records its keywords for the parent to validate.

    Anything else done with it (an attribute, model_copy, model_dump) builds the real ModelSettings first, paying
    pydantic's import only then, so files that build models from other models work as before.
    """

    def __init__(self, /, **data):
        object.__setattr__(self, "_mlops_data", dict(data))
        object.__setattr__(self, "_mlops_real", None)

    def _mlops_materialise(self):
        if self._mlops_real is None:
            from akerbp.mlops.settings import ModelSettings

            object.__setattr__(self, "_mlops_real", ModelSettings(**self._mlops_data))
        return self._mlops_real

    def _mlops_raw(self):
        return self._mlops_data if self._mlops_real is None else self._mlops_real

    def __getattr__(self, name):
        if name.startswith("_mlops_"):
            raise AttributeError(name)
        return getattr(self._mlops_materialise(), name)

    def __setattr__(self, name, value):
        setattr(self._mlops_materialise(), name, value)

    def __repr__(self):
        return f"ModelSettings({', '.join(f'{k}={safe_repr(v)}' for k, v in self._mlops_data.items())})"


_Recorded.__name__ = _Recorded.__qualname__ = "ModelSettings"


class _Unreadable(Exception):
    """In the child: the one error to report about the file."""


def child(path: str, name: str, result_path: str, megabytes: str) -> None:
    """Entry point of the child: read the settings file, write the result, end at once (threads or atexit handlers
    the file left behind must not keep the process alive or change its exit code)."""
    try:
        result = {"models": _models(path, name, int(megabytes))}
    except _Unreadable as e:
        result = {"error": str(e)}
    except BaseException as e:  # noqa: BLE001 - a bug here must still be an answer naming the file
        result = {"error": f"{name}: cannot be read: {type(e).__name__}: {safe_str(e)}"}
    try:
        text = json.dumps(result)
    except BaseException as e:  # noqa: BLE001
        text = json.dumps({"error": f"{name}: its models cannot be sent: {type(e).__name__}: {safe_str(e)}"})
    partial = result_path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _models(path: str, name: str, megabytes: int) -> list[dict]:
    code, source = _compile(path, name)
    import akerbp.mlops as package

    package.ModelSettings = _Recorded  # `from akerbp.mlops import ModelSettings` without pydantic
    namespace = {"__file__": path, "__name__": "mlops_settings", "__builtins__": __builtins__}
    pending: dict[int, dict] = {}
    pending_models.set(pending)
    sys.path.insert(0, os.path.dirname(path))
    try:
        exec(code, namespace)
    except BaseException as e:  # noqa: BLE001 - whatever the file raises, SystemExit and KeyboardInterrupt included
        raise _Unreadable(_raised(e, path, name, megabytes)) from None
    try:
        models = namespace.get("models", _MISSING)
        if models is _MISSING:
            raise _Unreadable(f"{name}: defines no `models`: add `models = [ModelSettings(model_name=..., "
                              "model_file=...), ...]`")
        if not isinstance(models, (list, tuple)) or not models:
            raise _Unreadable(f"{name}: `models` must be a non-empty list of ModelSettings(...) or dicts, not "
                              f"{'an empty ' + type(models).__name__ if isinstance(models, (list, tuple)) else type(models).__name__}")
        lines = _item_lines(source)
        out = []
        for i, item in enumerate(list(models)):
            line, keys = lines[i] if i < len(lines) else (None, {})
            out.append({"data": encode(item), "line": line, "keys": [[list(k), v] for k, v in keys.items()]})
        return out
    except _Unreadable:
        raise
    except BaseException as e:  # noqa: BLE001 - a `models` whose iteration raises...
        raise _Unreadable(_raised(e, path, name, megabytes, what="reading its `models`")) from None


_MISSING = object()


def _compile(path: str, name: str):
    """(code object, source text) of the file; _Unreadable naming the line for what Python cannot compile."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(MAX_SOURCE_BYTES + 1)
    if max(size, len(data)) > MAX_SOURCE_BYTES:
        raise _Unreadable(f"{name}: is {size:,} bytes; a settings file may have at most {MAX_SOURCE_BYTES:,}")
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise _Unreadable(f"{name}, line {line}: contains a null byte (\\0): a settings file is text; remove it")
    try:
        encoding = "utf-8"
        if b"coding" in b"\n".join(data.splitlines()[:2]):  # a PEP 263 declaration, which Python honours
            import io
            import tokenize

            encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        source = data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError) as e:  # not UTF-8 (and no coding declaration), or an unknown one
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = data[:bad.start].count(b"\n") + 1
            raise _Unreadable(f"{name}, line {line}: not UTF-8 text (byte {data[bad.start]:#04x}): save it as UTF-8") \
                from None
        raise _Unreadable(f"{name}, line {getattr(e, 'lineno', None) or 1}: {safe_str(getattr(e, 'msg', e))}") from None
    try:
        return compile(source, path, "exec"), source
    except SyntaxError as e:
        raise _Unreadable(f"{name}, line {e.lineno or '?'}: syntax error: {e.msg}") from None
    except (RecursionError, MemoryError, ValueError) as e:
        raise _Unreadable(f"{name}: cannot be compiled: {type(e).__name__}: {safe_str(e)} (nested too deeply?)") \
            from None


def _raised(e: BaseException, path: str, name: str, megabytes: int, what: str = "") -> str:
    """What the settings file raised, at its line, in one message."""
    try:
        import traceback

        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
    except BaseException:  # noqa: BLE001
        lines = []
    where = f", line {lines[-1]}" if lines else ""
    during = f" while {what}" if what else ""
    if isinstance(e, SystemExit):
        return (f"{name}{where}: called sys.exit({safe_repr(e.code)}){during}: a settings file must only define "
                "`models`, never exit; remove the call")
    if isinstance(e, KeyboardInterrupt):
        return f"{name}{where}: interrupted (KeyboardInterrupt){during}: its models were not read"
    if isinstance(e, MemoryError):
        return (f"{name}{where}: ran out of memory (MemoryError){during}: the budget for loading settings is "
                f"{megabytes} MB ({MEMORY_VAR})")
    message = safe_str(e)
    hint = "; add `from akerbp.mlops import ModelSettings`" if "'ModelSettings'" in message else ""
    return f"{name}{where}: {type(e).__name__}{during}: {message[:2000]}{hint}"


def _item_lines(source: str) -> list[tuple[int, dict[tuple, int]]]:
    """Lines of the items of a literal top-level `models = [...]`, and of their keywords/keys."""
    import ast

    try:
        body = ast.parse(source).body
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return []
    for stmt in body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "models" for t in targets) and isinstance(stmt.value, (ast.List, ast.Tuple)):
            out = []
            for elt in stmt.value.elts:
                keys = {}
                if isinstance(elt, ast.Call):
                    keys = {(k.arg,): k.lineno for k in elt.keywords if k.arg}
                elif isinstance(elt, ast.Dict):
                    keys = {(k.value,): k.lineno for k in elt.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                out.append((elt.lineno, keys))
            return out
    return []
