"""Where the CDF is: a real project from COGNITE_* variables, or else the local CDF of this repo.

get_client(), for the registry and everything per project: a project configured in the environment wins; with none,
the local CDF under .mlops/local-cdf is used, except in CI, where a missing project is a mistake to report, not to
paper over.

client_for_env(env), for deployed services (deploy, rollback, call, status, logs, history): ENV=dev services live
in the local CDF even when a project is configured, unless LOCAL_DEPLOYMENT=True (the original framework's switch);
test and prod live where get_client() goes. In CI the dev local CDF would be thrown away with the build, so using
it is refused unless MLOPS_LOCAL_CDF=1 (or for a dry run, which changes nothing).

MLOPS_CDF_MAX_RETRIES (default: the SDK's) caps the SDK's retries of failed requests, e.g. 0 to fail fast when CDF
cannot be reached. describe_failure() (cdf/failures.py, re-exported here) turns any error into the one line the CLI
prints.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from akerbp.mlops.vocabulary import ENVIRONMENTS
from akerbp.mlops.cdf.failures import describe_failure, network_failure  # noqa: F401 -- re-exported
from akerbp.mlops.errors import UsageError
from akerbp.mlops.utils.logger import get_logger, mask, register_secret  # noqa: F401 -- mask, register_secret: re-exported

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.local_cdf import LocalCDF

RETIRED_API_KEY_VARS = ("COGNITE_API_KEY_DATA", "COGNITE_API_KEY_FUNCTIONS", "COGNITE_API_KEY_FILES", "COGNITE_API_KEY")
CONFIG_VARS = (
    "COGNITE_PROJECT",
    "COGNITE_BASE_URL",
    "COGNITE_CLUSTER",
    "COGNITE_CLIENT_ID",
    "COGNITE_CLIENT_SECRET",
    "COGNITE_TOKEN_URL",
    "COGNITE_TENANT_ID",
    "COGNITE_TOKEN_SCOPES",
)
OIDC_HELP = (
    "COGNITE_PROJECT, COGNITE_BASE_URL (or COGNITE_CLUSTER), COGNITE_CLIENT_ID, COGNITE_CLIENT_SECRET and "
    "COGNITE_TOKEN_URL (or COGNITE_TENANT_ID); optionally COGNITE_TOKEN_SCOPES"
)
LOCAL_PROJECT = "local"
CLIENT_NAME = "akerbp.mlops"

_lock = threading.Lock()
_clients: dict[tuple[object, ...], "CogniteClient"] = {}  # ("project", ...settings) or ("local", data dir)
_embedded: dict[Path, "LocalCDF"] = {}  # data dir -> LocalCDF started by this process
_announced: set[Path] = set()


class CdfConfig(TypedDict):
    """A real project's settings, as read from the COGNITE_* variables."""

    project: str
    base_url: str
    client_id: str
    client_secret: str
    token_url: str
    scopes: list[str]


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def get_environment() -> str:
    """ENV: dev (unset or empty), test or prod, exactly: 'TEST' or ' test' is refused rather than guessed, since the
    environment decides where a deploy goes (prod included)."""
    env = os.environ.get("ENV", "")
    if env == "":
        return "dev"
    if env not in ENVIRONMENTS:
        raise UsageError(f"ENV={env!r} is not an environment: set ENV to exactly one of {', '.join(ENVIRONMENTS)} "
                         "(lowercase, no spaces)")
    return env


def _refuse_api_keys() -> None:
    found = [name for name in RETIRED_API_KEY_VARS if _env(name)]
    if found:
        raise UsageError(
            f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} set, but CDF retired API keys: authenticate with "
            f"OIDC client credentials instead. Set {OIDC_HELP}, and unset {', '.join(found)}"
        )


def cdf_config_from_env() -> CdfConfig | None:
    """The real project configured by COGNITE_* variables; None when none is set. Partial -> UsageError."""
    _refuse_api_keys()
    if not any(_env(name) for name in CONFIG_VARS):
        return None
    base_url = _env("COGNITE_BASE_URL") or (
        f"https://{_env('COGNITE_CLUSTER')}.cognitedata.com" if _env("COGNITE_CLUSTER") else ""
    )
    token_url = _env("COGNITE_TOKEN_URL") or (
        f"https://login.microsoftonline.com/{_env('COGNITE_TENANT_ID')}/oauth2/v2.0/token" if _env("COGNITE_TENANT_ID") else ""
    )
    missing = [
        label
        for label, value in (
            ("COGNITE_PROJECT", _env("COGNITE_PROJECT")),
            ("COGNITE_BASE_URL (or COGNITE_CLUSTER)", base_url),
            ("COGNITE_CLIENT_ID", _env("COGNITE_CLIENT_ID")),
            ("COGNITE_CLIENT_SECRET", _env("COGNITE_CLIENT_SECRET")),
            ("COGNITE_TOKEN_URL (or COGNITE_TENANT_ID)", token_url),
        )
        if not value
    ]
    if missing:
        set_vars = [name for name in CONFIG_VARS if _env(name)]
        raise UsageError(
            f"the CDF project is configured only in part ({', '.join(set_vars)} set): also set {', '.join(missing)}; "
            "or unset all COGNITE_* variables to use the local CDF"
        )
    base_url = base_url.rstrip("/")
    scopes = [s for s in re.split(r"[,\s]+", _env("COGNITE_TOKEN_SCOPES")) if s] or [f"{base_url}/.default"]
    register_secret(_env("COGNITE_CLIENT_SECRET"))
    return {
        "project": _env("COGNITE_PROJECT"),
        "base_url": base_url,
        "client_id": _env("COGNITE_CLIENT_ID"),
        "client_secret": _env("COGNITE_CLIENT_SECRET"),
        "token_url": token_url,
        "scopes": scopes,
    }


def in_ci() -> bool:
    return _env("CI").lower() in ("true", "1", "yes") or bool(_env("BITBUCKET_BUILD_NUMBER"))


def repo_root(start: Path | None = None) -> Path:
    """Nearest folder (from the working directory up) holding mlops_settings.py/.yaml or .git; else the cwd."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ("mlops_settings.py", "mlops_settings.yaml", ".git")):
            return folder
    return start


def local_cdf_dir() -> Path:
    """MLOPS_LOCAL_CDF_DIR, or .mlops/local-cdf in the repo root."""
    configured = _env("MLOPS_LOCAL_CDF_DIR")
    return Path(configured).resolve() if configured else repo_root() / ".mlops" / "local-cdf"


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def describe_target() -> str:
    """Where get_client() goes, for humans and audit records; never a secret."""
    config = cdf_config_from_env()
    if config:
        return f"project {config['project']} at {config['base_url']}"
    return f"local CDF at {_display(local_cdf_dir())}"


def _sdk_ready() -> None:
    from cognite.client import global_config

    # Before any ClientConfig: otherwise a thread asks PyPI for a newer SDK on first use (offline CI, local CDF).
    global_config.disable_pypi_version_check = True
    retries = _env("MLOPS_CDF_MAX_RETRIES")
    if retries:
        if not retries.isdigit():
            raise UsageError(f"MLOPS_CDF_MAX_RETRIES={retries!r} is not a number of retries: use e.g. 0 or 3")
        global_config.max_retries = global_config.max_retries_connect = int(retries)


def _bypass_proxy_for_loopback() -> None:
    for var in ("NO_PROXY", "no_proxy"):
        entries = [e.strip() for e in os.environ.get(var, "").split(",") if e.strip()]
        for host in ("127.0.0.1", "localhost"):
            if host not in entries:
                entries.append(host)
        os.environ[var] = ",".join(entries)


def _real_client(config: CdfConfig) -> "CogniteClient":
    _sdk_ready()
    from cognite.client import ClientConfig, CogniteClient
    from cognite.client.credentials import OAuthClientCredentials

    credentials = OAuthClientCredentials(
        token_url=config["token_url"],
        client_id=config["client_id"],
        client_secret=config["client_secret"],
        scopes=config["scopes"],
    )
    return CogniteClient(
        ClientConfig(client_name=CLIENT_NAME, project=config["project"], credentials=credentials, base_url=config["base_url"])
    )


def _client_for_url(base_url: str) -> "CogniteClient":
    _sdk_ready()
    from cognite.client import ClientConfig, CogniteClient
    from cognite.client.credentials import Token

    return CogniteClient(
        ClientConfig(client_name=CLIENT_NAME, project=LOCAL_PROJECT, credentials=Token("local-cdf"), base_url=base_url)
    )


def _why_local() -> str:
    if cdf_config_from_env() is None:
        return "(no CDF project configured)"
    return "(ENV=dev services live there; LOCAL_DEPLOYMENT=True puts them in the configured project)"


def _local_client(data_dir: Path) -> "CogniteClient":
    from akerbp.mlops.local_cdf.served import server_info  # the server itself only when this process embeds it

    _bypass_proxy_for_loopback()
    _sdk_ready()
    info = server_info(data_dir)
    served = info["base_url"] if info else None
    if info and info.get("restricted"):  # `mlops local-cdf serve --client ...`: our local token would get 401
        config = cdf_config_from_env()
        if config is not None and config["base_url"] == info["base_url"].rstrip("/"):
            return _real_client(config)  # the user configured this server as their project: use their client
        raise UsageError(
            f"the local CDF served at {served} for {_display(data_dir)} accepts only the clients given to "
            f"`mlops local-cdf serve --client ID:SECRET`: set COGNITE_PROJECT (any name), COGNITE_BASE_URL={served}, "
            f"COGNITE_TOKEN_URL={served}/oauth2/token, and COGNITE_CLIENT_ID and COGNITE_CLIENT_SECRET to one of "
            "those clients; or serve without --client"
        )
    if served:
        if data_dir not in _announced:
            _announced.add(data_dir)
            print(f"Using the local CDF served at {served} for {_display(data_dir)} {_why_local()}", file=sys.stderr)
        return _client_for_url(served)
    cdf = _embedded.get(data_dir)
    if cdf is None:
        from akerbp.mlops.local_cdf import LocalCDF

        cdf = LocalCDF(data_dir).start()
        _embedded[data_dir] = cdf
        atexit.register(_stop_at_exit, cdf)
    if data_dir not in _announced:
        _announced.add(data_dir)
        print(f"Using the local CDF at {_display(data_dir)} {_why_local()}", file=sys.stderr)
    return cdf.client(project=LOCAL_PROJECT)


def _stop_at_exit(cdf: "LocalCDF") -> None:
    """Stop an embedded local CDF as the process ends. A second Ctrl-C while it winds down (its workers get 2 s for
    their exit handlers) ends the wait without a traceback: the next start ends the orphaned workers and calls."""
    try:
        cdf.stop()
    except KeyboardInterrupt:
        pass


def _refuse_local_cdf_in_ci() -> None:
    if in_ci() and _env("MLOPS_LOCAL_CDF") != "1":
        raise UsageError(
            "no CDF project configured in CI: set COGNITE_PROJECT, COGNITE_BASE_URL (or COGNITE_CLUSTER), "
            "COGNITE_CLIENT_ID, COGNITE_CLIENT_SECRET and COGNITE_TOKEN_URL (or COGNITE_TENANT_ID) as repository/"
            "deployment variables, or MLOPS_LOCAL_CDF=1 to use a throwaway local CDF"
        )


def get_client(force_local: bool = False) -> "CogniteClient":
    """The CogniteClient of this process: the configured project, else the local CDF (started in-process if no
    `mlops local-cdf serve` runs for its data dir). force_local skips the project and the CI guard: the caller asked
    for the local CDF explicitly."""
    config = None if force_local else cdf_config_from_env()
    if config is None and not force_local:
        _refuse_local_cdf_in_ci()
    key: tuple[object, ...]
    if config is not None:
        key = ("project", config["project"], config["base_url"], config["client_id"], config["token_url"],
               tuple(config["scopes"]), hash(config["client_secret"]))
    else:
        data_dir = local_cdf_dir()
        key = ("local", data_dir)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _real_client(config) if config is not None else _local_client(data_dir)
            _clients[key] = client
        return client


def reset_clients() -> None:
    """Forget cached clients and stop local CDFs this process started (tests switching environments)."""
    with _lock:
        _clients.clear()
        for cdf in _embedded.values():
            cdf.stop()
        atexit.unregister(_stop_at_exit)
        _embedded.clear()
        _announced.clear()


# --- where the services of an environment live ---------------------------------------------------------------------

def _truthy(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "on")


def _check_env(env: str) -> str:
    if env not in ENVIRONMENTS:
        raise UsageError(f"environment {env!r} is unknown: use one of {', '.join(ENVIRONMENTS)}")
    return env


def env_uses_local_cdf(env: str) -> bool:
    """True when the services of `env` live in the local CDF whatever is configured: dev, unless LOCAL_DEPLOYMENT."""
    return _check_env(env) == "dev" and not _truthy(_env("LOCAL_DEPLOYMENT"))


def client_for_env(env: str, *, dry_run: bool = False) -> "CogniteClient":
    """The CDF where the services of ENV live: what deploy and rollback write to and call/status/logs/history read.

    dev: the local CDF (even with a project configured) unless LOCAL_DEPLOYMENT=True; test/prod: get_client().
    In CI the dev local CDF is refused unless MLOPS_LOCAL_CDF=1 or dry_run: a deploy there vanishes with the build.
    """
    check_env_target(env, dry_run=dry_run)
    return get_client(force_local=env_uses_local_cdf(env))


def check_env_target(env: str, *, dry_run: bool = False) -> None:
    """The refusals of client_for_env (CI guard, retired API keys, partial COGNITE_* settings), without importing
    cognite-sdk or starting a local CDF: a deploy checks them before its model tests start."""
    if not env_uses_local_cdf(env):
        if cdf_config_from_env() is None:
            _refuse_local_cdf_in_ci()
        return
    if in_ci() and not dry_run and _env("MLOPS_LOCAL_CDF") != "1":
        switch = (" LOCAL_DEPLOYMENT=True to deploy dev to the configured project,"
                  if cdf_config_from_env() is not None else "")
        raise UsageError(
            "ENV=dev services live in the local CDF, which in CI is thrown away with the build: set ENV=test or "
            f"ENV=prod in the step (a Bitbucket deployment's variables),{switch} or MLOPS_LOCAL_CDF=1 to use a "
            "throwaway local CDF on purpose"
        )


def describe_env_target(env: str) -> str:
    """Where client_for_env(env) goes, for humans and audit records; never a secret."""
    if env_uses_local_cdf(env):
        return f"local CDF at {_display(local_cdf_dir())}"
    return describe_target()


def clients_for_envs(envs) -> list[tuple["CogniteClient", list[str]]]:
    """The distinct CDFs holding the services of `envs`, each with its envs, for commands reading several
    environments at once. When a project is configured, the dev local CDF is read only if it exists (no empty one is
    created to say it is empty) and, in CI, only with MLOPS_LOCAL_CDF=1."""
    envs = [_check_env(e) for e in envs]
    groups: list[tuple["CogniteClient", list[str]]] = []
    for env in envs:
        if len(envs) > 1 and env_uses_local_cdf(env) and cdf_config_from_env() is not None and (
                not local_cdf_dir().is_dir() or (in_ci() and _env("MLOPS_LOCAL_CDF") != "1")):
            continue
        client = client_for_env(env)
        for known, members in groups:
            if known is client:
                members.append(env)
                break
        else:
            groups.append((client, [env]))
    return groups


# --- one line for any failure ----------------------------------------------------------------------------------------
