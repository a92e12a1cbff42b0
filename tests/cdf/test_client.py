"""Where the CDF is: env-configured projects, the local CDF default, the CI and API-key guards, secret masking."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from cognite.client import CogniteClient
from cognite.client.credentials import OAuthClientCredentials

from akerbp.mlops.cdf import client as cdf_client
from akerbp.mlops.cdf.client import (
    cdf_config_from_env,
    client_for_env,
    clients_for_envs,
    describe_env_target,
    describe_failure,
    describe_target,
    get_client,
    get_environment,
    local_cdf_dir,
    network_failure,
    repo_root,
)
from akerbp.mlops.errors import UsageError
from akerbp.mlops.local_cdf import LocalCDF
from akerbp.mlops.utils import logger

SECRET = "s3cret-Value-Never-Shown"
FULL_CONFIG = {
    "COGNITE_PROJECT": "my-proj",
    "COGNITE_CLUSTER": "westeurope-1",
    "COGNITE_CLIENT_ID": "my-client",
    "COGNITE_CLIENT_SECRET": SECRET,
    "COGNITE_TENANT_ID": "my-tenant",
}


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """No CDF configured, not in CI, working in an empty repo; embedded local CDFs stopped afterwards."""
    for name in list(os.environ):
        if name.startswith(("COGNITE_", "MLOPS_SECRET_", "MLOPS_LOCAL_CDF")) or name in ("CI", "BITBUCKET_BUILD_NUMBER", "ENV"):
            monkeypatch.delenv(name)
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    cdf_client.reset_clients()


def set_env(monkeypatch, values: dict) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


# --- ENV -----------------------------------------------------------------------------------------------------------


def test_environment_defaults_to_dev_and_accepts_test_and_prod(monkeypatch):
    assert get_environment() == "dev"
    for env in ("test", "prod", "dev"):
        monkeypatch.setenv("ENV", env)
        assert get_environment() == env


def test_an_unknown_environment_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("ENV", "production")
    with pytest.raises(UsageError, match=r"ENV='production'.*dev, test, prod"):
        get_environment()


# --- a real project from the environment ---------------------------------------------------------------------------


def test_no_cognite_variables_means_no_project():
    assert cdf_config_from_env() is None


def test_cluster_and_tenant_expand_to_urls_and_a_default_scope(monkeypatch):
    set_env(monkeypatch, FULL_CONFIG)
    config = cdf_config_from_env()
    assert config["project"] == "my-proj"
    assert config["base_url"] == "https://westeurope-1.cognitedata.com"
    assert config["token_url"] == "https://login.microsoftonline.com/my-tenant/oauth2/v2.0/token"
    assert config["scopes"] == ["https://westeurope-1.cognitedata.com/.default"]


def test_explicit_urls_and_scopes_win(monkeypatch):
    set_env(monkeypatch, {**FULL_CONFIG, "COGNITE_BASE_URL": "https://api.example.com/", "COGNITE_TOKEN_URL":
                          "https://idp.example.com/token", "COGNITE_TOKEN_SCOPES": "a/.default, b/.default c"})
    config = cdf_config_from_env()
    assert config["base_url"] == "https://api.example.com"
    assert config["token_url"] == "https://idp.example.com/token"
    assert config["scopes"] == ["a/.default", "b/.default", "c"]


def test_a_partial_configuration_lists_what_is_missing(monkeypatch):
    set_env(monkeypatch, {"COGNITE_PROJECT": "my-proj", "COGNITE_CLIENT_SECRET": SECRET})
    with pytest.raises(UsageError) as caught:
        cdf_config_from_env()
    message = str(caught.value)
    for missing in ("COGNITE_BASE_URL (or COGNITE_CLUSTER)", "COGNITE_CLIENT_ID", "COGNITE_TOKEN_URL (or COGNITE_TENANT_ID)"):
        assert missing in message
    assert SECRET not in message


@pytest.mark.parametrize("variable", ["COGNITE_API_KEY_DATA", "COGNITE_API_KEY_FUNCTIONS", "COGNITE_API_KEY_FILES",
                                      "COGNITE_API_KEY"])
def test_retired_api_keys_are_refused_without_showing_them(monkeypatch, variable):
    monkeypatch.setenv(variable, "an-api-key-value-1234")
    with pytest.raises(UsageError) as caught:
        get_client()
    message = str(caught.value)
    assert variable in message and "retired" in message
    assert "COGNITE_CLIENT_ID" in message and "COGNITE_CLIENT_SECRET" in message and "COGNITE_TOKEN_URL" in message
    assert "an-api-key-value-1234" not in message


def test_a_configured_project_gets_client_credentials(monkeypatch):
    set_env(monkeypatch, FULL_CONFIG)
    client = get_client()
    assert isinstance(client, CogniteClient)
    assert client.config.project == "my-proj" and client.config.base_url == "https://westeurope-1.cognitedata.com"
    assert isinstance(client.config.credentials, OAuthClientCredentials)
    assert get_client() is client
    assert describe_target() == "project my-proj at https://westeurope-1.cognitedata.com"
    assert SECRET not in describe_target()


def test_client_credentials_work_end_to_end_against_a_token_endpoint(monkeypatch, tmp_path):
    # A local CDF that accepts only one client: the OAuth flow, the secret and the project all have to be right.
    with LocalCDF(tmp_path / "remote", clients={"my-client": SECRET}) as remote:
        set_env(monkeypatch, {"COGNITE_PROJECT": "my-proj", "COGNITE_BASE_URL": remote.base_url,
                              "COGNITE_CLIENT_ID": "my-client", "COGNITE_CLIENT_SECRET": SECRET,
                              "COGNITE_TOKEN_URL": remote.token_url, "NO_PROXY": "127.0.0.1,localhost"})
        client = get_client()
        client.files.upload_bytes(b"hello", name="hello.txt", external_id="hello")
        assert [f.external_id for f in client.files.list(limit=5)] == ["hello"]
        assert not (tmp_path / ".mlops").exists()


# --- the local CDF -------------------------------------------------------------------------------------------------


def test_without_a_project_the_local_cdf_of_the_repo_is_used(clean_env, capsys):
    client = get_client()
    assert client.files.list(limit=1) == []
    assert (clean_env / ".mlops" / "local-cdf").is_dir()
    assert client.config.project == "local"
    assert get_client() is client
    err = capsys.readouterr().err
    assert err.count("Using the local CDF at .mlops/local-cdf (no CDF project configured)") == 1
    assert describe_target() == "local CDF at .mlops/local-cdf"
    assert {"127.0.0.1", "localhost"} <= set(os.environ["NO_PROXY"].split(","))


def test_the_repo_root_is_found_from_a_subfolder(clean_env, monkeypatch):
    (clean_env / "mlops_settings.yaml").write_text("")
    sub = clean_env / "model_code" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert repo_root() == clean_env.resolve()
    assert local_cdf_dir() == clean_env.resolve() / ".mlops" / "local-cdf"


def test_mlops_local_cdf_dir_chooses_the_data_dir(clean_env, monkeypatch):
    monkeypatch.setenv("MLOPS_LOCAL_CDF_DIR", str(clean_env / "elsewhere"))
    get_client().files.upload_bytes(b"x", name="x.txt", external_id="x")
    assert (clean_env / "elsewhere").is_dir() and not (clean_env / ".mlops").exists()


def test_a_running_local_cdf_server_for_the_data_dir_is_reused(clean_env):
    with LocalCDF(clean_env / ".mlops" / "local-cdf") as served:
        served.announce()
        try:
            client = get_client()
            assert client.config.base_url == served.base_url
            client.files.upload_bytes(b"x", name="x.txt", external_id="seen-by-the-server")
            assert served.client().files.retrieve(external_id="seen-by-the-server") is not None
        finally:
            served.withdraw()


@pytest.mark.parametrize("ci_variable", [("CI", "true"), ("BITBUCKET_BUILD_NUMBER", "42")])
def test_ci_without_a_project_is_refused(monkeypatch, ci_variable):
    monkeypatch.setenv(*ci_variable)
    with pytest.raises(UsageError) as caught:
        get_client()
    message = str(caught.value)
    assert "no CDF project configured in CI" in message
    assert "COGNITE_PROJECT" in message and "MLOPS_LOCAL_CDF=1" in message


def test_ci_may_opt_in_to_a_throwaway_local_cdf(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("MLOPS_LOCAL_CDF", "1")
    assert get_client().files.list(limit=1) == []


def test_ci_with_a_project_uses_it(monkeypatch):
    monkeypatch.setenv("CI", "true")
    set_env(monkeypatch, FULL_CONFIG)
    assert get_client().config.project == "my-proj"


def test_force_local_ignores_the_project(monkeypatch):
    set_env(monkeypatch, FULL_CONFIG)
    assert get_client(force_local=True).config.project == "local"


# --- secret masking ------------------------------------------------------------------------------------------------


def test_mask_replaces_every_kind_of_secret(monkeypatch):
    monkeypatch.setenv("COGNITE_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("MLOPS_SECRET_DB_PASSWORD", "db-pass-0987")
    logger.register_secret("registered-value-42")
    text = f"a {SECRET} b db-pass-0987 c registered-value-42 d"
    assert logger.mask(text) == "a *** b *** c *** d"
    assert cdf_client.mask is logger.mask
    assert logger.mask("no secrets here") == "no secrets here"


def test_short_values_are_not_masked_so_logs_stay_readable():
    logger.register_secret("ab")
    logger.register_secret("")
    logger.register_secret(None)
    assert logger.mask("tab stab ab") == "tab stab ab"


def test_secrets_never_reach_a_log_line(monkeypatch, capsys, caplog):
    monkeypatch.setenv("COGNITE_CLIENT_SECRET", SECRET)
    log = logger.get_logger("test_masking")
    assert log.name == "akerbp.mlops.test_masking"
    with caplog.at_level(logging.INFO):
        log.warning("connecting with %s", SECRET)
        log.info(f"inline {SECRET}")
        try:
            raise RuntimeError(f"token request failed for secret {SECRET}")
        except RuntimeError:
            log.exception("failed")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "connecting with ***" in err and "inline ***" in err and "RuntimeError: token request failed for secret ***" in err
    assert caplog.records and all(SECRET not in r.getMessage() for r in caplog.records)
    assert all(SECRET not in caplog.handler.format(r) for r in caplog.records)


def test_the_default_logger_is_akerbp_mlops():
    assert logger.get_logger().name == "akerbp.mlops"
    assert logger.get_logger("akerbp.mlops.services.x").name == "akerbp.mlops.services.x"


@pytest.mark.parametrize("level, debug_shown, warning", [("", False, False), ("debug", True, False),
                                                           ("LOUD", False, True)])
def test_the_log_level_comes_from_mlops_log_level(level, debug_shown, warning):
    code = "from akerbp.mlops.utils import logger; log = logger.get_logger(); log.debug('dbg-line'); log.info('info-line')"
    env = {**os.environ, "MLOPS_LOG_LEVEL": level}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert proc.stdout == ""
    assert "info-line" in proc.stderr
    assert ("dbg-line" in proc.stderr) == debug_shown
    assert ("is not a log level" in proc.stderr) == warning


# --- where the services of an environment live -------------------------------------------------------------------


def test_dev_services_live_in_the_local_cdf_even_with_a_project(monkeypatch):
    set_env(monkeypatch, FULL_CONFIG)
    assert client_for_env("dev").config.project == "local"
    assert client_for_env("test").config.project == client_for_env("prod").config.project == "my-proj"
    assert describe_env_target("dev") == "local CDF at .mlops/local-cdf"
    assert describe_env_target("test") == "project my-proj at https://westeurope-1.cognitedata.com"
    monkeypatch.setenv("LOCAL_DEPLOYMENT", "True")
    assert client_for_env("dev").config.project == "my-proj"
    with pytest.raises(UsageError, match="environment 'staging' is unknown"):
        client_for_env("staging")


@pytest.mark.parametrize("configured", [False, True])
def test_ci_refuses_the_dev_local_cdf_unless_opted_in_or_dry_run(monkeypatch, configured):
    monkeypatch.setenv("CI", "true")
    if configured:
        set_env(monkeypatch, FULL_CONFIG)
    with pytest.raises(UsageError) as caught:
        client_for_env("dev")
    message = str(caught.value)
    assert "ENV=test" in message and "MLOPS_LOCAL_CDF=1" in message
    assert ("LOCAL_DEPLOYMENT=True" in message) is configured  # offered only when there is a project to go to
    assert client_for_env("dev", dry_run=True).config.project == "local"
    monkeypatch.setenv("MLOPS_LOCAL_CDF", "1")
    assert client_for_env("dev").config.project == "local"


def test_listing_every_environment_groups_them_by_cdf(clean_env, monkeypatch):
    assert [envs for _, envs in clients_for_envs(["dev", "test", "prod"])] == [["dev", "test", "prod"]]
    cdf_client.reset_clients()
    set_env(monkeypatch, FULL_CONFIG)
    # The dev local CDF exists (created above): read it too, beside the project.
    assert [envs for _, envs in clients_for_envs(["dev", "test", "prod"])] == [["dev"], ["test", "prod"]]
    monkeypatch.setenv("MLOPS_LOCAL_CDF_DIR", str(clean_env / "never-created"))
    assert [envs for _, envs in clients_for_envs(["dev", "test", "prod"])] == [["test", "prod"]]
    assert not (clean_env / "never-created").exists()


def test_mlops_cdf_max_retries_caps_the_sdk_retries(monkeypatch):
    from cognite.client import global_config

    saved = global_config.max_retries, global_config.max_retries_connect
    try:
        monkeypatch.setenv("MLOPS_CDF_MAX_RETRIES", "0")
        get_client()
        assert (global_config.max_retries, global_config.max_retries_connect) == (0, 0)
        monkeypatch.setenv("MLOPS_CDF_MAX_RETRIES", "many")
        cdf_client.reset_clients()
        with pytest.raises(UsageError, match="MLOPS_CDF_MAX_RETRIES='many'"):
            get_client()
    finally:
        global_config.max_retries, global_config.max_retries_connect = saved


def test_failures_are_described_in_one_line(monkeypatch):
    import httpx2
    from cognite.client.exceptions import CogniteAPIError, CogniteConnectionRefused

    monkeypatch.setenv("COGNITE_CLIENT_SECRET", SECRET)
    request = httpx2.Request("POST", "https://idp.example.com/token")
    try:
        try:
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        except httpx2.ConnectError as inner:
            raise CogniteConnectionRefused from inner
    except CogniteConnectionRefused as e:
        refused = e
    line = describe_failure(refused)
    assert line.startswith("cannot reach CDF at https://idp.example.com/token: ConnectError: [Errno 111]")
    assert network_failure(ValueError("x")) is None
    api = describe_failure(CogniteAPIError(f"denied for {SECRET}", code=403))
    assert api.startswith("a CDF request to the local CDF failed: CogniteAPIError") and SECRET not in api
    assert describe_failure(KeyError("id")).startswith("unexpected error: KeyError('id') (set MLOPS_LOG_LEVEL=DEBUG")
