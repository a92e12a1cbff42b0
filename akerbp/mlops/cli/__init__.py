"""The `mlops` command: one click group, one module per noun, loaded only when used.

Commands import lazily so `mlops --help` and `mlops settings validate` stay fast (cognite-sdk takes ~1 s to import).
Every MlopsError becomes a one-line message on stderr and its exit code (1 failed, 2 usage/settings); any other
error (CDF unreachable, a bug) one line and exit 1, its traceback only with MLOPS_LOG_LEVEL=DEBUG. Secrets are
masked in all of them.
"""
from __future__ import annotations

import errno
import importlib
import sys

import click

from akerbp.mlops import __version__
from akerbp.mlops.errors import MlopsError

# command name -> (module under akerbp.mlops.cli, attribute, one-line help)
COMMANDS = {
    "init": ("init", "init", "Scaffold a new model repo (settings, model template, scripts, pipeline)."),
    "settings": ("settings", "settings", "Validate mlops_settings.py/.yaml and print its JSON Schema."),
    "models": ("models", "models", "The versioned model registry: upload, list, promote, download, delete."),
    "deploy": ("deploy", "deploy", "Test, build and deploy prediction or training services as CDF Functions."),
    "call": ("service", "call", "Call a deployed service and print its JSON response."),
    "status": ("service", "status", "Deployed services: versions, hashes, deploy time, last call."),
    "logs": ("service", "logs", "Logs of a service's calls."),
    "rollback": ("deploy", "rollback", "Roll a service back to one of its previous deployments."),
    "history": ("service", "history", "The audit trail of deploys, rollbacks and promotions of a model."),
    "pipeline": ("pipeline", "pipeline", "Which Bitbucket pipeline steps run for a branch; run them here."),
    "local-cdf": ("local_cdf", "local_cdf", "Run and inspect the offline local CDF."),
    "automations": ("automations", "automations", "Scheduled retraining (train, gate, deploy, notify) as CDF workflows."),
    "analytics": ("analytics", "analytics", "SQL over a model's prediction calls: calls, errors, latency, drift."),
    "batch": ("batch", "batch", "Predict CDF files (csv, jsonl, parquet) with a model's live prediction code."),
    "ui": ("ui", "ui", "A read-only web dashboard: models, versions, history, automations, analytics."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"akerbp.mlops.cli.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from COMMANDS so listing does not import every module.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        from akerbp.mlops.cli.output import error

        try:
            return super().invoke(ctx)
        except MlopsError as e:
            from akerbp.mlops.cdf.client import network_failure

            # An error wrapping a network failure says which URL could not be reached instead.
            error(network_failure(e) or str(e))
            sys.exit(e.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise  # click's own: usage errors, Ctrl-C, ctx.exit()
        except Exception as e:  # noqa: BLE001 - whatever it is, the user gets one line, not a traceback
            if isinstance(e, OSError) and e.errno == errno.EPIPE:
                # The reader of our output went away (`mlops ... | head -1`): click's main exits quietly, as CLIs
                # do, instead of reporting a broken pipe as a network failure.
                raise
            from akerbp.mlops.cdf.client import describe_failure
            from akerbp.mlops.utils.logger import get_logger

            get_logger("cli").debug("the traceback of the error below", exc_info=e)  # shown at DEBUG, masked
            error(describe_failure(e))
            sys.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="akerbp.mlops")
def main() -> None:
    """akerbp.mlops: ship ML models to Cognite Data Fusion.

    With no CDF project configured (COGNITE_PROJECT and friends unset), every command uses the local CDF under
    .mlops/local-cdf in this repo. ENV selects the environment: dev (default), test or prod.
    """
