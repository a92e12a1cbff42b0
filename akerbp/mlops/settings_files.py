"""Reading mlops_settings.py / mlops_settings.yaml into raw models that remember their lines, and wording errors.

Kept apart from the schema (akerbp.mlops.settings) so that module is about what valid settings are, and this one
about where a problem was written and how to say it. It does not import the schema: callers pass the model class.
A .py file runs in a child process with a budget (settings_python), a YAML file is read with bounds
(settings_yaml): whatever a settings file holds or does, reading it ends in models or an UnreadableSettings.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from akerbp.mlops.settings_capture import safe_repr

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic_core import ErrorDetails


class UnreadableSettings(Exception):
    """The settings file cannot be turned into models at all; `errors` are the problems to report (usually one)."""

    def __init__(self, *errors: str):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def display_path(path: Path) -> str:
    """The path relative to the working directory when it is below it, as a user would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class RawModel:
    """One model's input before validation, with the lines its keys were written on."""

    def __init__(self, data: Any, line: int | None = None, key_lines: dict[tuple, int] | None = None):
        self.data, self.line, self.key_lines = data, line, key_lines or {}

    def line_of(self, loc: tuple = ()) -> int | None:
        """Line of the deepest written key on the path `loc`, else of the model."""
        loc = tuple(p for p in loc if p != "[key]")
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.key_lines:
                return self.key_lines[loc[:n]]
        return self.line


def read_models(path: Path, name: str, model: type[BaseModel]) -> list[RawModel]:
    """The models written in a .py or .yaml settings file; `model` is the settings class (ModelSettings).

    Raises UnreadableSettings when the file has no models to validate (syntax error, no `models`, an exit, ...).
    """
    if path.suffix == ".py":
        from akerbp.mlops import settings_python

        return settings_python.read(path, name)
    return _read_yaml(path, name, model)


def read_yaml_documents(path: Path, name: str) -> tuple[list[yaml.Node], list[Any]]:
    """(nodes, values) of the documents of a YAML file read with bounds (settings_yaml); UnreadableSettings naming
    the file and line for anything that keeps it from being read."""
    from akerbp.mlops import settings_yaml

    try:
        return settings_yaml.read_documents(path)
    except settings_yaml.Refused as e:
        raise UnreadableSettings(*(f"{name}{', ' if p.startswith('line ') else ': '}{p}" for p in e.args)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UnreadableSettings(f"{name}{where}: YAML syntax error: {problem}") from None
    except UnicodeDecodeError as e:
        raise UnreadableSettings(f"{name}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): save "
                                 "it as UTF-8") from None


def _read_yaml(path: Path, name: str, model: type[BaseModel]) -> list[RawModel]:
    nodes, values = read_yaml_documents(path, name)
    docs = [(n, v) for n, v in zip(nodes, values) if v is not None]
    if not docs:
        raise UnreadableSettings(f"{name}: no models: add `models:` with a list of model settings")
    if len(docs) == 1 and isinstance(docs[0][1], dict) and "models" in docs[0][1]:
        node, models = docs[0][0], docs[0][1]["models"]
        models_key, models_node = next((k, v) for k, v in node.value if k.value == "models")
        if not isinstance(models, list) or not models:
            line = models_key.start_mark.line + 1
            raise UnreadableSettings(
                f"{name}, line {line}: 'models' must be a non-empty list of model settings (one '- model_name: ...' each)"
            )
        return [_raw_from_node(item_node, item) for item_node, item in zip(models_node.value, models)]
    if isinstance(docs[0][1], list):
        raise UnreadableSettings(f"{name}, line {docs[0][0].start_mark.line + 1}: the top level is a list: put it under "
                                 "`models:`")
    if len(docs) == 1 and isinstance(docs[0][1], dict) and not set(docs[0][1]) & set(model.model_fields):
        raise UnreadableSettings(f"{name}: no `models:` list (found {', '.join(map(str, docs[0][1]))}): add `models:` "
                                 "with a list of model settings, or write one model per '---' document")
    if any(isinstance(v, dict) and "models" in v for _, v in docs):
        raise UnreadableSettings(
            f"{name}: mixes a 'models:' list with one-model documents: use one form (a 'models:' list, or one model "
            "per '---' document)"
        )
    return [_raw_from_node(n, v) for n, v in docs]


def _raw_from_node(node, value: Any) -> RawModel:
    return RawModel(value, node.start_mark.line + 1, node_lines(node))


def node_lines(node, prefix: tuple = ()) -> dict[tuple, int]:
    """Line of every key and list item under `node`, by path: ("info", "prediction", "owner") -> 9."""
    lines = {}
    children = []
    if isinstance(node, yaml.MappingNode):
        children = [(prefix + (str(k.value),), k, v) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(prefix + (i,), v, v) for i, v in enumerate(node.value)]
    for path, key, value in children:
        lines[path] = key.start_mark.line + 1
        lines.update(node_lines(value, path))
    return lines


# --- wording -------------------------------------------------------------------------------------------------------


def field_name(loc: tuple) -> str:
    """A pydantic error location as the user writes the field: ('info', 'prediction', 'owner') -> info.prediction.owner."""
    out = ""
    for part in loc:
        if part != "[key]":
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = safe_repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(error: ErrorDetails, field_models: Mapping[tuple, type[BaseModel]]) -> str:
    """One pydantic error as words a data scientist can act on; follows "field 'x'".

    field_models: the model class at each nested location, () for the top one, to suggest known field names.
    """
    kind, loc, value, ctx = error["type"], error["loc"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        known = list(field_models.get(tuple(loc[:-1]), field_models[()]).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        return " is not a known field" + (f"; did you mean '{close[0]}'?" if close else f"; known fields: {', '.join(known)}")
    if kind == "missing":
        return " is required"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        return f": {_short(value)} is not allowed; use one of {', '.join(allowed)}"
    if kind == "string_pattern_mismatch" and loc[-1] == "model_name":
        return (f": {_short(value)} is not a valid model name: use lowercase letters, digits and '_', starting with a "
                "letter (it forms CDF function and file external ids)")
    if kind == "string_pattern_mismatch" and loc[0] == "secrets":
        return f": {_short(value)} is not a valid secret name: use lowercase letters, digits and '-' (CDF's rule)"
    if kind == "string_pattern_mismatch" and loc[0] == "env_vars":
        return f": {_short(value)} is not a valid environment variable name"
    if kind == "string_too_long":
        return f": {'key ' if '[key]' in loc else ''}{_short(value)} is longer than {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f": has more than {ctx.get('max_length')} items"
    if kind == "string_type":
        return f": {_short(value)} is not text; quote it"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f": must be a mapping of fields, not {type(value).__name__}"
    if kind == "value_error":
        return f": {ctx.get('error', error['msg'])}"
    return f": {_short(value)}: {error['msg'][0].lower()}{error['msg'][1:]}"
