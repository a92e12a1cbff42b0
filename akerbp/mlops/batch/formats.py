"""The file formats of batch executions, read and written a row at a time so memory is bounded by a batch, not by
the file: .csv (the csv module), .jsonl (a JSON object per line) and .parquet (DuckDB, imported only for parquet).

Bundled into the batch function: standard library only, besides DuckDB for parquet.

Reading yields Row(index, record, original, error) from `start` on: `record` is what predict() gets (a dict),
`original` what the writer copies to the output, `error` why the row cannot be a record (the row is then reported
as bad, not fatal). A csv value that reads as a number is passed to predict() as one (an empty one as None); the
output keeps the row's original text. Row indexes count data rows from 0 (a csv header is not a row; blank jsonl
lines are skipped).

Writing takes each row's original and its prediction columns (`prediction`, or the keys of a dict prediction):
csv and jsonl straight to the file; parquet through a JSON-lines spool that DuckDB copies into parquet on close,
with the input's column types and DOUBLE/BIGINT/BOOLEAN/VARCHAR prediction columns (JSON text for lists and
objects), so parquet output never needs the whole table in memory either.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterator

FORMATS = (".csv", ".jsonl", ".parquet")
PREDICTION = "prediction"  # the output column of a prediction that is not a dict
DUCKDB_MEMORY = "256MB"  # DuckDB's own limit while reading or copying parquet; it spills beyond it


class FormatError(ValueError):
    """A file that cannot be read as its format (unknown extension, unreadable header or parquet file)."""


def format_of(name: str | None) -> str | None:
    """The format of a file name (".csv", ".jsonl", ".parquet"), or None when it is none of them."""
    suffix = PurePosixPath(name or "").suffix.lower()
    return suffix if suffix in FORMATS else None


@dataclass
class Row:
    index: int
    record: dict | None
    original: Any
    error: str | None = None


def read(path: str, fmt: str, start: int = 0) -> Iterator[Row]:
    """The rows of `path` from row `start` on."""
    if fmt == ".csv":
        return _read_csv(path, start)
    if fmt == ".jsonl":
        return _read_jsonl(path, start)
    if fmt == ".parquet":
        return _read_parquet(path, start)
    raise FormatError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _number(text: str) -> Any:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    digits = text.strip().lstrip("+-")
    return int(text) if digits.isdigit() and digits.isascii() else value


def _read_csv(path: str, start: int) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        width = len(header)
        index = -1
        for fields in reader:
            if not fields:
                continue  # a blank line is not a row
            index += 1
            if index < start:
                continue
            if len(fields) != width:
                yield Row(index, None, fields, f"{len(fields)} fields, the header has {width}")
                continue
            yield Row(index, {name: _number(value) for name, value in zip(header, fields)}, fields)


def csv_header(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), None) or []


def _read_jsonl(path: str, start: int) -> Iterator[Row]:
    with open(path, encoding="utf-8") as f:
        index = -1
        for line in f:
            if not line.strip():
                continue
            index += 1
            if index < start:
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                yield Row(index, None, None, f"not JSON: {e}")
                continue
            if not isinstance(record, dict):
                yield Row(index, None, None, f"a JSON {type(record).__name__}, not an object")
                continue
            yield Row(index, record, record)


def _connect():
    import duckdb

    return duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "threads": 1,
                                  "preserve_insertion_order": True})


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parquet_columns(path: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a parquet file's columns."""
    con = _connect()
    try:
        return [(r[0], r[1]) for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall()]
    except Exception as e:  # duckdb.Error: an unreadable parquet file
        raise FormatError(f"cannot read it as parquet: {e}") from None
    finally:
        con.close()


# DuckDB types whose Python values are JSON's already; the others reach predict() as a JSON caller would send them
_JSON_TYPES = {"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
               "UBIGINT", "FLOAT", "DOUBLE", "VARCHAR"}


def _json_like(value: Any) -> Any:
    """A parquet value as the prediction service would get it in JSON: a decimal as a float, a date or time as ISO
    text, bytes as hex, lists and structs element by element."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_like(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_like(v) for v in value]
    return _json_default(value)


def _read_parquet(path: str, start: int, chunk: int = 1024) -> Iterator[Row]:
    con = _connect()
    try:
        try:
            cursor = con.execute(f"SELECT * FROM read_parquet(?) OFFSET {int(start)}", [path])
        except Exception as e:  # duckdb.Error
            raise FormatError(f"cannot read it as parquet: {e}") from None
        names = [d[0] for d in cursor.description]
        converted = [i for i, d in enumerate(cursor.description) if str(d[1]) not in _JSON_TYPES]
        index = start
        while True:
            rows = cursor.fetchmany(chunk)  # streamed: DuckDB keeps a chunk, not the file
            if not rows:
                return
            for values in rows:
                record = dict(zip(names, values))
                for i in converted:
                    record[names[i]] = _json_like(values[i])
                yield Row(index, record, values)
                index += 1
    finally:
        con.close()


# --- writing -----------------------------------------------------------------------------------------------------

def prediction_columns(prediction: Any) -> dict[str, Any]:
    """The output columns of one row's prediction."""
    return dict(prediction) if isinstance(prediction, dict) else {PREDICTION: prediction}


def _plain(value: Any) -> Any:
    """A value as a csv cell: numbers and text as they are, None as empty, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, default=str)


def _json_default(value: Any) -> Any:
    iso = getattr(value, "isoformat", None)
    if callable(iso):
        return iso()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    try:
        return float(value)  # Decimal, numpy scalars
    except (TypeError, ValueError):
        return str(value)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class Writer:
    """Rows written one at a time to `path` in format `fmt`; close() finishes the file (parquet: the copy)."""

    def __init__(self, path: str, fmt: str, source: str):
        self.path, self.fmt, self.source = path, fmt, source
        self.rows = 0
        self.columns: list[str] | None = None  # the prediction columns, fixed by the first row
        if fmt == ".csv":
            self._file = open(path, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._file)
            self._header = csv_header(source)
        elif fmt == ".jsonl":
            self._file = open(path, "w", encoding="utf-8")
        elif fmt == ".parquet":
            self._input = parquet_columns(source)
            self._spool_path = path + ".spool.jsonl"
            self._file = open(self._spool_path, "w", encoding="utf-8")
            self._types: dict[str, str] = {}
        else:
            raise FormatError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")

    def write(self, original: Any, prediction: Any) -> None:
        columns = prediction_columns(prediction)
        if self.columns is None:
            self.columns = list(columns)
            if self.fmt == ".csv":
                self._csv.writerow([*self._header, *(c for c in self.columns if c not in self._header)])
        if self.fmt == ".csv":
            cells = list(original)
            for name in self.columns:
                value = _plain(columns.get(name))
                if name in self._header:
                    cells[self._header.index(name)] = value
                else:
                    cells.append(value)
            self._csv.writerow(cells)
        elif self.fmt == ".jsonl":
            self._file.write(json.dumps({**original, **columns}, default=_json_default) + "\n")
        else:
            row = dict(zip((n for n, _ in self._input), original))
            for name in self.columns:
                value = _finite(columns.get(name))
                self._note_type(name, value)
                row[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
            self._file.write(json.dumps(row, default=_json_default, allow_nan=False) + "\n")
        self.rows += 1

    def _note_type(self, name: str, value: Any) -> None:
        if value is None:
            return
        kind = ("BOOLEAN" if isinstance(value, bool) else "BIGINT" if isinstance(value, int)
                else "DOUBLE" if isinstance(value, float) else "VARCHAR")
        seen = self._types.get(name)
        if seen is None or seen == kind:
            self._types[name] = kind
        elif {seen, kind} == {"BIGINT", "DOUBLE"}:
            self._types[name] = "DOUBLE"
        else:
            self._types[name] = "VARCHAR"

    def close(self) -> None:
        self._file.close()
        if self.fmt != ".parquet":
            if self.fmt == ".csv" and self.columns is None:  # no row predicted: the header alone
                with open(self.path, "w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerow([*self._header, PREDICTION])
            return
        types = dict(self._input)
        for name in self.columns or [PREDICTION]:
            types[name] = self._types.get(name, "DOUBLE")
        struct = "{" + ", ".join(f"{_literal(n)}: {_literal(t)}" for n, t in types.items()) + "}"
        con = _connect()
        try:
            select = ", ".join(_quote(n) for n in types)
            con.execute(f"COPY (SELECT {select} FROM read_json(?, format='newline_delimited', columns={struct})) "
                        f"TO {_literal(self.path)} (FORMAT parquet)", [self._spool_path])
        finally:
            con.close()
            os.remove(self._spool_path)
