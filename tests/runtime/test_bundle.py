"""What every function folder bundles: services/ is runtime code only, and finding the bundle's files
(bundle.runtime_files) parses each framework file once, also when builds run concurrently."""
from __future__ import annotations

import ast
import shutil
import threading
import types
from pathlib import Path

import pytest

import akerbp.mlops as mlops_package
from akerbp.mlops import function_folder
from akerbp.mlops.deployment import build, bundle
from akerbp.mlops.vocabulary import AUTOMATION

MLOPS = Path(mlops_package.__file__).resolve().parent
THREADS = 6


def _services_imported_by(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module else []
        for name in names:
            parts = name.split(".")
            if parts[:3] == ["akerbp", "mlops", "services"] and len(parts) > 3:
                found.add(parts[3])
    return found


def test_every_module_of_services_is_what_a_deployed_function_runs():
    """services/ holds what handler.py reaches through its imports, nothing deploy-time (that lives in
    deployment/, e.g. local_call.py): each of its modules is imported, directly or not, by the handler."""
    services = MLOPS / "services"
    entries = (function_folder.HANDLER_SOURCE, function_folder.PREDICTION_HANDLER_SOURCE)
    reached, queue = set(), [services.joinpath(*source[1:]) for source in entries]
    while queue:
        path = queue.pop()
        for module in _services_imported_by(path) - reached:
            reached.add(module)
            if (services / f"{module}.py").is_file():
                queue.append(services / f"{module}.py")
    modules = {p.stem for p in services.glob("*.py")} - {"__init__"} - {Path(source[-1]).stem for source in entries}
    assert modules - reached == set()


@pytest.fixture(autouse=True)
def own_imports_cache(tmp_path, monkeypatch):
    """The parses counted here are this test's: no other run's cache on disk (bundle._imports_cache_file)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _copy_of_the_package(root: Path) -> types.SimpleNamespace:
    """A copy of akerbp/mlops to edit, standing in for the package the bundle is taken from."""
    shutil.copytree(MLOPS, root / "mlops", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "local_cdf", "cli",
                                                                         "templates"))
    return types.SimpleNamespace(__file__=str(root / "mlops" / "__init__.py"))


def _counting_parses(monkeypatch) -> list[str]:
    parsed: list[str] = []
    lock = threading.Lock()
    real = ast.parse

    def parse(source, filename="<unknown>", *args, **kwargs):
        with lock:
            parsed.append(str(filename))
        return real(source, filename, *args, **kwargs)

    monkeypatch.setattr(bundle.ast, "parse", parse)
    return parsed


def test_a_second_build_parses_no_bundled_file_again_only_a_changed_one(tmp_path, monkeypatch):
    package = _copy_of_the_package(tmp_path)
    monkeypatch.setattr(bundle, "mlops_package", package)
    first = bundle.runtime_files()
    parsed = _counting_parses(monkeypatch)

    assert bundle.runtime_files() == first
    assert parsed == []

    responses = tmp_path / "mlops" / "services" / "responses.py"  # now imports a module nothing bundled before
    (tmp_path / "mlops" / "extra_helper.py").write_text("X = 1\n")
    responses.write_text(responses.read_text() + "\nfrom akerbp.mlops import extra_helper  # noqa\n")
    again = bundle.runtime_files()
    assert sorted(Path(p).name for p in parsed) == ["extra_helper.py", "responses.py"]
    assert set(again) - set(first) == {tmp_path / "mlops" / "extra_helper.py"}


def test_concurrent_builds_parse_each_bundled_file_once_and_agree(tmp_path, monkeypatch):
    package = _copy_of_the_package(tmp_path)
    monkeypatch.setattr(bundle, "mlops_package", package)
    parsed = _counting_parses(monkeypatch)
    start = threading.Barrier(THREADS, timeout=30)
    results: list[list[Path]] = []
    errors: list[BaseException] = []

    def one_build() -> None:
        try:
            start.wait()
            results.append(bundle.runtime_files())
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=one_build) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert len(results) == THREADS and all(r == results[0] for r in results)
    assert sorted(parsed) == sorted(str(p) for p in results[0])  # each file once, whatever the interleaving


def test_another_process_reuses_the_parses_through_the_cache_on_disk(tmp_path, monkeypatch):
    package = _copy_of_the_package(tmp_path)
    monkeypatch.setattr(bundle, "mlops_package", package)
    first = bundle.runtime_files(AUTOMATION)
    assert (tmp_path / "cache" / "akerbp-mlops").is_dir()
    monkeypatch.setattr(bundle, "_parsed", {})  # what a new process starts with
    parsed = _counting_parses(monkeypatch)
    assert bundle.runtime_files(AUTOMATION) == first and parsed == []

    changed = tmp_path / "mlops" / "services" / "responses.py"
    changed.write_text(changed.read_text() + "\n# edited\n")
    monkeypatch.setattr(bundle, "_parsed", {})
    assert bundle.runtime_files(AUTOMATION) == first
    assert [Path(p).name for p in parsed] == ["responses.py"]  # only the edited file, by its content

    (tmp_path / "cache" / "akerbp-mlops" / "imports-v1.json").write_text("{not json")  # a broken cache: parse
    monkeypatch.setattr(bundle, "_parsed", {})
    assert bundle.runtime_files(AUTOMATION) == first


def test_a_prediction_handler_names_no_client_and_a_training_handler_does(tmp_path):
    """CDF builds a client for each call of a handler naming one: a prediction without analytics (these settings),
    which never uses it, names none."""
    from akerbp.mlops.settings import load_settings
    from support import copy_template

    (settings,) = load_settings(copy_template(tmp_path / "repo") / "mlops_settings.py")
    signatures = {}
    for service in ("prediction", "training"):
        built = build.build_folder(settings, service, "dev", artifact=settings.root / settings.artifact_folder,
                                   model_id="well_density/dev/1", secrets={})
        tree = ast.parse((built.path / function_folder.HANDLER_FILE).read_text())
        [handle] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "handle"]
        signatures[service] = [a.arg for a in handle.args.args]
    assert signatures == {"prediction": ["data", "secrets", "function_call_info"],
                          "training": ["data", "client", "secrets", "function_call_info"]}
