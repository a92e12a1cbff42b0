"""Import the model module of a function folder, and say clearly why when that fails."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from akerbp.mlops.services.responses import ServiceError

NEEDS = {"prediction": ("initialization", "predict"), "training": ("train",)}


class ModelImportError(ServiceError):
    """The model module cannot be imported or lacks part of the model interface."""


def import_model(root: Path, module_name: str, service: str):
    """The model module (e.g. "model_code.model") from the folder `root`, checked for what `service` calls."""
    root = Path(root).resolve()
    _put_first_on_path(root)
    try:
        module = importlib.import_module(module_name)
        if not _is_under(getattr(module, "__file__", None), root):
            # A module of that name came from elsewhere (another folder served by this process): load ours.
            _forget(module_name.split(".")[0])
            module = importlib.import_module(module_name)
    except Exception as e:
        hint = " (is it listed in requirements.model?)" if isinstance(e, ModuleNotFoundError) else ""
        raise ModelImportError(
            f"could not import the model module {module_name!r}: {type(e).__name__}: {e}{hint}"
        ) from e
    missing = [name for name in NEEDS[service] if not callable(getattr(module, name, None))]
    if missing:
        raise ModelImportError(f"model module {module_name!r} has no {', '.join(f'{m}()' for m in missing)}")
    return module


def _put_first_on_path(root: Path) -> None:
    entry = str(root)
    if sys.path[:1] != [entry]:
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def _is_under(file, root: Path) -> bool:
    return file is not None and Path(file).resolve().is_relative_to(root)


def _forget(top: str) -> None:
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()
