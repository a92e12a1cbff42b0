"""What a settings file (or an automations file: KINDS) defines, captured in the child process that runs it and
carried to the reader as JSON.

The child (settings_python starts it) imports only the standard library and this module: `from akerbp.mlops import
ModelSettings` gets a stand-in that records its keywords (the reader validates them, as for YAML), so reading costs
a Python start-up, not pydantic's import. Values JSON cannot carry (a Path, an object whose repr raises, a huge
integer) travel as stand-ins that keep their repr, so validation names them as it would the originals.
"""
from __future__ import annotations

import contextvars
import json
import math
import os
import sys

# The child imports this module first: only what it needs is imported here (each import is start-up time).
MAX_SOURCE_BYTES = 1_000_000
MAX_VALUE_DEPTH = 50
MAX_INT_DIGITS = 1000
MAX_INT_BITS = 3321  # about MAX_INT_DIGITS decimal digits
TAG = "$mlops"  # marks an encoded value that JSON cannot carry as is
MEMORY_VAR = "MLOPS_SETTINGS_MEMORY_MB"

# Set while the settings file runs: the real ModelSettings(...) records its raw input here under id(instance), so
# the loader validates every model and reports every error together, instead of stopping at the first one that fails.
pending_models: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mlops_settings_pending", default=None)


class Kind:
    """What a file read this way must define: the module-level `variable`, and how to say what is wrong."""

    def __init__(self, variable: str, file: str, example: str, imports: str, empty_ok: bool):
        self.variable, self.file, self.example, self.imports, self.empty_ok = variable, file, example, imports, empty_ok

    @property
    def advice(self) -> str:
        return f"{self.file} must only define `{self.variable}`"


KINDS = {
    "models": Kind("models", "a settings file", "models = [ModelSettings(model_name=..., model_file=...), ...]",
                   "from akerbp.mlops import ModelSettings", empty_ok=False),
    "automations": Kind("automations", "an automations file",
                        "automations = [Automation(name=..., model=..., trigger=..., action=...), ...]",
                        "from akerbp.mlops.automations import Automation, ...", empty_ok=True),
}


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
        if callable(getattr(type(value), "_mlops_raw", None)):  # a recorded call: ModelSettings, automations.spec
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


def child(path: str, name: str, result_path: str, megabytes: str, variable: str = "models") -> None:
    """Entry point of the child: read the file, write the result, end at once (threads or atexit handlers
    the file left behind must not keep the process alive or change its exit code)."""
    kind = KINDS[variable]
    try:
        result: dict[str, object] = {"items": _items(path, name, int(megabytes), kind)}
    except _Unreadable as e:
        result = {"error": str(e)}
    except BaseException as e:  # noqa: BLE001 - a bug here must still be an answer naming the file
        result = {"error": f"{name}: cannot be read: {type(e).__name__}: {safe_str(e)}"}
    try:
        text = json.dumps(result)
    except BaseException as e:  # noqa: BLE001
        text = json.dumps({"error": f"{name}: its {kind.variable} cannot be sent: {type(e).__name__}: {safe_str(e)}"})
    partial = result_path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, result_path)
    for stream in (sys.stdout, sys.stderr):  # the file may have closed or replaced them
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)


def _items(path: str, name: str, megabytes: int, kind: Kind) -> list[dict]:
    code, source = _compile(path, name, kind)
    import akerbp.mlops as package

    package.ModelSettings = _Recorded  # `from akerbp.mlops import ModelSettings` without pydantic
    namespace = {"__file__": path, "__name__": f"mlops_{kind.variable}", "__builtins__": __builtins__}
    pending: dict[int, dict] = {}
    pending_models.set(pending)
    sys.path.insert(0, os.path.dirname(path))
    try:
        exec(code, namespace)
    except BaseException as e:  # noqa: BLE001 - whatever the file raises, SystemExit and KeyboardInterrupt included
        raise _Unreadable(_raised(e, path, name, megabytes, kind)) from None
    try:
        models = namespace.get(kind.variable, _MISSING)
        what = "ModelSettings(...) or dicts" if kind.variable == "models" else "Automation(...)"
        if models is _MISSING:
            raise _Unreadable(f"{name}: defines no `{kind.variable}`: add `{kind.example}`")
        if not isinstance(models, (list, tuple)) or (not models and not kind.empty_ok):
            raise _Unreadable(f"{name}: `{kind.variable}` must be a {'' if kind.empty_ok else 'non-empty '}list of "
                              f"{what}, not "
                              f"{'an empty ' + type(models).__name__ if isinstance(models, (list, tuple)) else type(models).__name__}")
        lines = _item_lines(source, kind.variable)
        out = []
        for i, item in enumerate(list(models)):
            line, keys = lines[i] if i < len(lines) else (None, {})
            out.append({"data": encode(item), "line": line, "keys": [[list(k), v] for k, v in keys.items()]})
        return out
    except _Unreadable:
        raise
    except BaseException as e:  # noqa: BLE001 - a `models` whose iteration raises...
        raise _Unreadable(_raised(e, path, name, megabytes, kind, what=f"reading its `{kind.variable}`")) from None


_MISSING = object()


def _compile(path: str, name: str, kind: Kind = KINDS["models"]):
    """(code object, source text) of the file; _Unreadable naming the line for what Python cannot compile."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(MAX_SOURCE_BYTES + 1)
    if max(size, len(data)) > MAX_SOURCE_BYTES:
        raise _Unreadable(f"{name}: is {size:,} bytes; {kind.file} may have at most {MAX_SOURCE_BYTES:,}")
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise _Unreadable(f"{name}, line {line}: contains a null byte (\\0): {kind.file} is text; remove it")
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


def _raised(e: BaseException, path: str, name: str, megabytes: int, kind: Kind, what: str = "") -> str:
    """What the file raised, at its line, in one message."""
    try:
        import traceback

        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
    except BaseException:  # noqa: BLE001
        lines = []
    where = f", line {lines[-1]}" if lines else ""
    during = f" while {what}" if what else ""
    if isinstance(e, SystemExit):
        return (f"{name}{where}: called sys.exit({safe_repr(e.code)}){during}: {kind.advice}, never exit; "
                "remove the call")
    if isinstance(e, KeyboardInterrupt):
        return f"{name}{where}: interrupted (KeyboardInterrupt){during}: its {kind.variable} were not read"
    if isinstance(e, MemoryError):
        return (f"{name}{where}: ran out of memory (MemoryError){during}: the budget for loading it is "
                f"{megabytes} MB ({MEMORY_VAR})")
    message = safe_str(e)
    names = ("ModelSettings",) if kind.variable == "models" else _SPEC_NAMES
    hint = f"; add `{kind.imports}`" if isinstance(e, NameError) and any(f"'{n}'" in message for n in names) else ""
    return f"{name}{where}: {type(e).__name__}{during}: {message[:2000]}{hint}"


_SPEC_NAMES = ("Automation", "ScheduledTrigger", "TrainDeploy", "TrainingSpecifications", "BuildMetric",
               "DeployedModelMetric", "ThresholdDirection", "DeploymentSpecifications", "SlackNotification",
               "CustomWebhook")


def _item_lines(source: str, variable: str = "models") -> list[tuple[int, dict[tuple, int]]]:
    """Lines of the items of a literal top-level `models = [...]` (or `variable`), and of their keywords/keys."""
    import ast

    try:
        body = ast.parse(source).body
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return []
    targets: list[ast.expr]
    value: ast.expr | None  # None: an annotation without a value
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == variable for t in targets) and isinstance(value, (ast.List, ast.Tuple)):
            out = []
            for elt in value.elts:
                keys: dict[tuple, int] = {}
                if isinstance(elt, ast.Call):
                    keys = {(k.arg,): k.lineno for k in elt.keywords if k.arg}
                elif isinstance(elt, ast.Dict):
                    keys = {(k.value,): k.lineno for k in elt.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                out.append((elt.lineno, keys))
            return out
    return []
