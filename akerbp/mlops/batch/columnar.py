"""The fast path of formats.py: csv and parquet read and written by DuckDB, so Python touches a row only to make
the record predict() gets and to spool its prediction.

Reading: `SELECT * ... OFFSET start` fetched batch_size rows at a time (DuckDB streams: it holds a chunk, not the
file). A csv is read as standard csv (comma, double quotes, a header): the columns DuckDB's sniffer finds numeric in
its sample are cast (a value that is not a number, later in the file, is passed on as its text: it spoils its row,
not its column), the others converted value by value as the row-by-row reader does. A csv DuckDB cannot read with
the header the csv module reads, or that fails part-way (a row of another width), is left to the row-by-row reader
(Malformed). Sniffing over the whole file (sample_size=-1) would hold the file in memory: it is not done.
Parquet values reach predict() as JSON would carry them (a decimal as a float, a date as ISO text).

Writing: each row's (ok, prediction columns) go to a csv spool (rows before the call's first as not ok); on close
DuckDB joins the input positionally with the spool and copies the predicted rows to the output: the input's columns exactly as they were
(csv text as written, parquet types), then the prediction columns.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Callable, Iterator

from akerbp.mlops.batch.formats import PREDICTION, Batch, Malformed, json_default, number

DUCKDB_MEMORY = "128MB"  # DuckDB's own limit while reading or copying; it spills to disk beyond it
# Standard csv; 4 MB read buffers (DuckDB's default, 32 MB, cached as the file is read, made its memory grow with
# the file), so a line may be at most 1 MB long (a longer one: the row-by-row reader).
CSV_OPTIONS = "header=true, delim=',', quote='\"', escape='\"', buffer_size=4194304, max_line_size=1048576"
# DuckDB types whose Python values are JSON's already
JSON_TYPES = {"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
              "UBIGINT", "FLOAT", "DOUBLE", "VARCHAR"}
OK = "__mlops_ok"
NUMERIC = ("BIGINT", "DOUBLE")
SPOOL_CHUNK = 1_000_000  # spool lines written at once for the rows before a call's first  # csv column types read by DuckDB; the others as text


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
    """(name, type) of a csv's columns: BIGINT or DOUBLE where DuckDB's sniffer (a sample of rows: bounded memory)
    finds numbers, else VARCHAR (converted by formats.number, as the row-by-row reader does); None when DuckDB does
    not read the header the csv module reads (another dialect): then the row-by-row reader goes on."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header:
        return None
    con = connect()
    try:
        found = con.execute(f"DESCRIBE SELECT * FROM read_csv(?, {CSV_OPTIONS})", [path]).fetchall()
    except Exception:  # noqa: BLE001 - duckdb.Error: not a csv DuckDB reads; the row-by-row reader says why
        return None
    finally:
        con.close()
    columns = [(r[0], r[1] if r[1] in NUMERIC else "VARCHAR") for r in found]
    return columns if [n for n, _ in columns] == header else None


def input_sql(fmt: str, path: str, columns: list[tuple[str, str]] | None, as_text: bool = False) -> str:
    """The input as a DuckDB relation: parquet as it is; csv as text (as_text, for the output), or with its numeric
    columns cast and, after all columns, each numeric column's text where the cast failed (a late "n/a" the sniffer's
    sample did not see), so the reader passes that value on as the row-by-row reader would."""
    if fmt == ".parquet":
        return f"read_parquet({literal(path)})"
    assert columns is not None
    text = f"read_csv({literal(path)}, {CSV_OPTIONS}, columns={_struct([(n, 'VARCHAR') for n, _ in columns])})"
    if as_text:
        return text
    cast = [f"TRY_CAST({quote(n)} AS {t}) AS {quote(n)}" if t in NUMERIC else quote(n) for n, t in columns]
    raw = [f"CASE WHEN TRY_CAST({quote(n)} AS {t}) IS NULL THEN {quote(n)} END" for n, t in columns if t in NUMERIC]
    return f"(SELECT {', '.join(cast + raw)} FROM {text})"


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
        late: list[tuple[int, str]] = []  # (position of a numeric column's raw text, its name)
        if fmt == ".csv":
            convert = [(n, number) for n, t in columns if t == "VARCHAR"]
            late = list(enumerate((n for n, t in columns if t in NUMERIC), start=len(columns)))
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
            records = [dict(zip(names, values)) for values in rows]  # zip stops at the names: no raw columns
            for name, fix in convert:
                for record in records:
                    record[name] = fix(record[name])
            for position, name in late:
                for k in [k for k, values in enumerate(rows) if values[position] is not None]:
                    records[k][name] = number(rows[k][position])
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
        self._before = start  # rows before `start`, spooled as not predicted once the columns are known

    def _fill_before(self) -> None:
        line = "0" + "," * len(self.columns or [PREDICTION]) + "\n"  # DuckDB's sniffer wants every line as wide
        for done in range(0, self._before, SPOOL_CHUNK):
            self._file.write(line * min(SPOOL_CHUNK, self._before - done))
        self._before = 0

    def write_batch(self, batch: Batch, ok: list[bool] | None, predictions: list) -> None:
        if ok is None and self.columns in (None, [PREDICTION]) and all(type(p) is float for p in predictions):
            # the common case (every row predicted, one float each), written as one string: ~2x the csv module
            self.columns = [PREDICTION]
            self._fill_before()
            self._types[PREDICTION] = _merge(self._types.get(PREDICTION), "DOUBLE" if predictions else None)
            self._file.write("".join([f"1,{p!r}\n" for p in predictions]))
            self.spooled += len(predictions)
            self.rows += len(predictions)
            return
        if self.columns is None and predictions:
            first = next((p for i, p in enumerate(predictions) if ok is None or ok[i]), None)
            self.columns = list(first) if isinstance(first, dict) else [PREDICTION]
        self._fill_before()
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
        self._fill_before()
        self._file.close()
        names = self.columns or [PREDICTION]
        spool = [(OK, "INTEGER"), *((n, self._types.get(n) or "DOUBLE") for n in names)]
        inputs = {n for n, _ in self.input}
        replaced = [n for n in names if n in inputs]
        star = "i.*" + (f" REPLACE ({', '.join(f's.{quote(n)} AS {quote(n)}' for n in replaced)})" if replaced else "")
        added = "".join(f", s.{quote(n)}" for n in names if n not in inputs)
        source = input_sql(self.fmt, self.source, self.input, as_text=True)
        # Positional, over the whole input: rows past the spool's end pair with NULLs and are left out. (A LIMIT and
        # OFFSET on the input made DuckDB buffer the join, its memory growing with the file.)
        sql = (f"COPY (SELECT {star}{added} FROM {source} i "
               f"POSITIONAL JOIN read_csv({literal(self._spool_path)}, header=false, delim=',', quote='\"', "
               f"escape='\"', buffer_size=4194304, null_padding=true, columns={_struct(spool)}) s "
               f"WHERE s.{quote(OK)} = 1) "
               f"TO {literal(self.path)} (FORMAT {'parquet' if self.fmt == '.parquet' else 'csv'})")
        con = connect()
        try:
            con.execute(sql)
        except Exception as e:  # noqa: BLE001 - duckdb.Error: the input cannot be read after all
            raise Malformed(str(e)) from None
        finally:
            con.close()
            os.remove(self._spool_path)
