"""`mlops batch MODEL --input X`: predict CDF files with the live prediction code of MODEL, inside CDF.

Parses, calls akerbp.mlops.batch.run and prints: progress on stderr, a table of the files (or --json) on stdout.
Exit 0 when every file was predicted (bad rows are listed, not a failure), 1 when a file failed, 2 for usage errors
(no live prediction in the environment, no input file matched, a format it cannot read).
"""
from __future__ import annotations

import sys

import click

from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import echo, note, print_json, print_table
from akerbp.mlops.errors import UsageError
from akerbp.mlops.vocabulary import is_model_name

BAD_ROWS_SHOWN = 10


@click.command()
@click.argument("model")
@click.option("--input", "input_", required=True, multiple=True, metavar="XID|PREFIX/",
              help="A CDF file external id, or a prefix ending in '/' (every file under it); repeatable. "
                   "Formats by extension: .csv, .jsonl, .parquet.")
@click.option("--output", metavar="PREFIX/|XID",
              help="Where the predictions go: a prefix ending in '/' (the input's path below its prefix is kept), "
                   "or one file's external id (default: mlops-batch/MODEL/ENV/EXECUTION/<input external id>).")
@options.env(help="The environment whose live prediction predicts (default: $ENV, else dev).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Records per predict() call.")
@click.option("--execution", metavar="ID", help="The execution id in the output names (default: time + random).")
@options.json_output(help="Print the batch result as JSON.")
def batch(model: str, input_: tuple[str, ...], output: str | None, env: str | None, batch_size: int,
          execution: str | None, as_json: bool) -> None:
    """Predict every row of CDF files with MODEL's live prediction service, in a CDF Function.

    Each input file gets an output file of the same format: its rows plus the prediction (a `prediction` column,
    or one column per key of a dict prediction). Rows predict() refuses are left out and listed.
    """
    from akerbp.mlops.batch import run
    from akerbp.mlops.cdf.client import client_for_env

    if not is_model_name(model):
        raise UsageError(f"{model!r} is not a model name: lowercase letters, digits and '_', starting with a letter")
    env = options.env_or_default(env)
    result = run(client_for_env(env), model, env, input_[0] if len(input_) == 1 else list(input_), output,
                 batch_size=batch_size, execution=execution, say=note)
    if as_json:
        print_json(result.as_dict())
    else:
        rows = [["INPUT", "ROWS", "PREDICTED", "BAD", "OUTPUT"]]
        for f in result.files:
            rows.append([f.source, str(f.rows), str(f.rows_out), str(f.bad_rows),
                         ", ".join(f.outputs) if not f.error else f"FAILED: {f.error.splitlines()[0]}"])
        print_table(rows)
        for bad in result.bad_rows[:BAD_ROWS_SHOWN]:
            echo(f"bad row {bad['row']} of {bad['file']}: {bad['error']}")
        more = result.bad_row_count - min(len(result.bad_rows), BAD_ROWS_SHOWN)
        if more > 0:
            echo(f"... and {more} more bad row(s) (--json lists the first {len(result.bad_rows)})")
        echo(f"execution {result.execution}: {result.rows_out} of {result.rows_in} rows predicted by "
             f"{result.model_id or model} in {result.seconds:.1f} s")
    if not result.ok:
        sys.exit(1)
