"""The fast path of formats.py: csv and parquet read and written by DuckDB, so Python touches a row only to make
the record predict() gets and to spool its prediction.

Reading: `SELECT * ... OFFSET start` fetched batch_size rows at a time (DuckDB streams: it holds a chunk, not the
file). A csv is read as standard csv (comma, double quotes, a header) with the column types DuckDB finds over the
whole file (sample_size=-1, so a late value never breaks the read); a column that is text because some of its values
are not numbers is converted value by value as the row-by-row reader does, so a stray "n/a" spoils its row, not its
column. A csv DuckDB cannot read with the header the csv module reads is left to the row-by-row reader (Malformed).
Parquet values reach predict() as JSON would carry them (a decimal as a float, a date as ISO text).

Writing: each row's (ok, prediction columns) go to a csv spool; on close DuckDB joins the input's rows [start, end)
positionally with the spool and copies the predicted rows to the output: the input's columns exactly as they were
(csv text as written, parquet types), then the prediction columns.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Callable, Iterator

from akerbp.mlops.batch.formats import PREDICTION, Batch, Malformed, json_default, number

DUCKDB_MEMORY = "256MB"  # DuckDB's own limit while reading or copying; it spills to disk beyond it
CSV_OPTIONS = "header=true, delim=',', quote='\"', escape='\"'"
# DuckDB types whose Python values are JSON's already
JSON_TYPES = {"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
              "UBIGINT", "FLOAT", "DOUBLE", "VARCHAR"}
OK = "__mlops_ok"


def connect():
    import duckdb

    return duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "threads": 1, "preserve_insertion_order": True})


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _struct(columns: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{literal(n)}: {literal(t)}" for n, t in columns) + "}"


def csv_columns(path: str) -> list[tuple[str, str]] | None:
    """(name, type) of a csv as DuckDB reads it over the whole file; None when that is not the header the csv
    module reads (a row of another width, another dialect): then the row-by-row reader goes on."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header:
        return None
    con = connect()
    try:
        found = con.execute(f"DESCRIBE SELECT * FROM read_csv(?, {CSV_OPTIONS}, sample_size=-1)", [path]).fetchall()
    except Exception:  # noqa: BLE001 - duckdb.Error: not a csv DuckDB reads; the row-by-row reader says why
        return None
    finally:
        con.close()
    columns = [(r[0], r[1]) for r in found]
    return columns if [n for n, _ in columns] == header else None


def input_sql(fmt: str, path: str, columns: list[tuple[str, str]] | None, as_text: bool = False) -> str:
    if fmt == ".parquet":
        return f"read_parquet({literal(path)})"
    assert columns is not None
    typed = [(n, "VARCHAR") for n, _ in columns] if as_text else columns
    return f"read_csv({literal(path)}, {CSV_OPTIONS}, columns={_struct(typed)})"


def parquet_columns(path: str) -> list[tuple[str, str]]:
    con = connect()
    try:
        return [(r[0], r[1]) for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall()]
    except Exception as e:  # noqa: BLE001 - duckdb.Error: an unreadable parquet file
        raise Malformed(f"cannot read it as parquet: {e}") from None
    finally:
        con.close()


def _json_like(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_like(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_like(v) for v in value]
    return json_default(value)


def read(fmt: str, path: str, columns: list[tuple[str, str]], start: int, batch_size: int) -> Iterator[Batch]:
    """Batches of records from row `start` on; Malformed when DuckDB fails part-way."""
    con = connect()
    try:
        try:
            cursor = con.execute(f"SELECT * FROM {input_sql(fmt, path, columns)} OFFSET {int(start)}")
        except Exception as e:  # noqa: BLE001 - duckdb.Error
            raise Malformed(str(e)) from None
        names = [n for n, _ in columns]
        convert: list[tuple[str, Callable[[Any], Any]]]
        if fmt == ".csv":
            convert = [(n, number) for n, t in columns if t == "VARCHAR"]
        else:
            convert = [(n, _json_like) for n, t in columns if str(t) not in JSON_TYPES]
        index = start
        while True:
            try:
                rows = cursor.fetchmany(batch_size)
            except Exception as e:  # noqa: BLE001 - duckdb.Error part-way
                raise Malformed(str(e)) from None
            if not rows:
                return
            records = [dict(zip(names, values)) for values in rows]
            for name, fix in convert:
                for record in records:
                    record[name] = fix(record[name])
            yield Batch(index, records)
            index += len(records)
    finally:
        con.close()


def _kind(types: set) -> str | None:
    types.discard(type(None))
    if not types:
        return None
    if types <= {int}:
        return "BIGINT"
    if types <= {int, float}:
        return "DOUBLE"
    if types == {bool}:
        return "BOOLEAN"
    return "VARCHAR"


def _merge(seen: str | None, kind: str | None) -> str | None:
    if seen is None or kind is None or seen == kind:
        return seen or kind
    return "DOUBLE" if {seen, kind} == {"BIGINT", "DOUBLE"} else "VARCHAR"


def _cell(value: Any) -> Any:
    return json.dumps(value, default=json_default) if isinstance(value, (list, dict, tuple)) else value


class Writer:
    """Predictions spooled; on close the input's predicted rows with them, copied to `path` by DuckDB."""

    def __init__(self, path: str, fmt: str, source: str, columns: list[tuple[str, str]], start: int):
        self.path, self.fmt, self.source, self.input, self.start = path, fmt, source, columns, start
        self.rows = 0  # written (predicted)
        self.spooled = 0  # every input row, predicted or not
        self.columns: list[str] | None = None
        self._types: dict[str, str | None] = {}
        self._spool_path = path + ".spool.csv"
        self._file = open(self._spool_path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file, lineterminator="\n")  # as the fast path writes it

    def write_batch(self, batch: Batch, ok: list[bool] | None, predictions: list) -> None:
        if ok is None and self.columns in (None, [PREDICTION]) and all(type(p) is float for p in predictions):
            # the common case (every row predicted, one float each), written as one string: ~2x the csv module
            self.columns = [PREDICTION]
            self._types[PREDICTION] = _merge(self._types.get(PREDICTION), "DOUBLE" if predictions else None)
            self._file.write("".join([f"1,{p!r}\n" for p in predictions]))
            self.spooled += len(predictions)
            self.rows += len(predictions)
            return
        if self.columns is None and predictions:
            first = next((p for i, p in enumerate(predictions) if ok is None or ok[i]), None)
            self.columns = list(first) if isinstance(first, dict) else [PREDICTION]
        names = self.columns or [PREDICTION]
        dicts = names != [PREDICTION] or any(isinstance(p, dict) for p in predictions[:1])
        if dicts:
            cells = [[(p.get(n) if isinstance(p, dict) else None) for n in names] for p in predictions]
        else:
            cells = [[p] for p in predictions]
        flags = [1] * len(cells) if ok is None else [int(x) for x in ok]
        for j, name in enumerate(names):
            column = [row[j] for row, flag in zip(cells, flags) if flag]
            self._types[name] = _merge(self._types.get(name), _kind(set(map(type, column))))
            if any(isinstance(v, (list, dict, tuple)) for v in column):
                for row in cells:
                    row[j] = _cell(row[j])
        self._csv.writerows([flag, *row] for flag, row in zip(flags, cells))
        self.spooled += len(cells)
        self.rows += sum(flags)

    def close(self) -> None:
        self._file.close()
        names = self.columns or [PREDICTION]
        spool = [(OK, "INTEGER"), *((n, self._types.get(n) or "DOUBLE") for n in names)]
        inputs = {n for n, _ in self.input}
        replaced = [n for n in names if n in inputs]
        star = "i.*" + (f" REPLACE ({', '.join(f's.{quote(n)} AS {quote(n)}' for n in replaced)})" if replaced else "")
        added = "".join(f", s.{quote(n)}" for n in names if n not in inputs)
        source = input_sql(self.fmt, self.source, self.input, as_text=True)
        sql = (f"COPY (SELECT {star}{added} FROM (SELECT * FROM {source} LIMIT {self.spooled} OFFSET {self.start}) i "
               f"POSITIONAL JOIN read_csv({literal(self._spool_path)}, header=false, delim=',', quote='\"', "
               f"escape='\"', columns={_struct(spool)}) s WHERE s.{quote(OK)} = 1) "
               f"TO {literal(self.path)} (FORMAT {'parquet' if self.fmt == '.parquet' else 'csv'})")
        con = connect()
        try:
            con.execute(sql)
        except Exception as e:  # noqa: BLE001 - duckdb.Error: the input cannot be read after all
            raise Malformed(str(e)) from None
        finally:
            con.close()
            os.remove(self._spool_path)
