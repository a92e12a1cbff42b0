"""The file formats of batch executions, read and written a batch at a time so memory is bounded by the batch size,
not by the file: .csv, .jsonl (a JSON object per line) and .parquet.

csv and parquet go through DuckDB (columnar.py: the project's analytics engine, fast and streaming); jsonl, and a
csv DuckDB cannot read as standard csv, row by row here (the csv and json modules). Bundled into the batch function:
standard library only, besides DuckDB (imported on first use).

Reading yields Batch(start, records, errors, originals): `records` is what predict() gets (dicts; None for a row
that cannot be one, `errors` saying why by its position: the row is reported as bad, not fatal). A csv value that
reads as a number is passed to predict() as one (an empty one as None); the output keeps the row's original text.
A parquet value reaches predict() as a JSON caller would send it (a decimal as a float, a date or time as ISO text);
the output keeps its type. Row indexes count data rows from 0 (a csv header is not a row; blank lines are skipped).

Writing takes each batch's predictions: the output row is the input row's columns (as they were), then the
prediction columns (`prediction`, or the keys of a dict prediction, which replace input columns of the same name);
rows not predicted are left out.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterator

FORMATS = (".csv", ".jsonl", ".parquet")
PREDICTION = "prediction"  # the output column of a prediction that is not a dict
_NUMBER_START = frozenset("0123456789+-.iInN")  # how a text float() reads can start (inf, nan included)


class FormatError(ValueError):
    """A file that cannot be read as its format."""


class Malformed(FormatError):
    """DuckDB cannot read the file (a csv then goes row by row; a parquet file fails)."""


def format_of(name: str | None) -> str | None:
    """The format of a file name (".csv", ".jsonl", ".parquet"), or None when it is none of them."""
    suffix = PurePosixPath(name or "").suffix.lower()
    return suffix if suffix in FORMATS else None


@dataclass
class Batch:
    start: int  # the index of its first row
    records: list  # dicts, None for a row that cannot be a record
    errors: dict[int, str] = field(default_factory=dict)  # position in the batch -> why it is not a record
    originals: list | None = None  # what a row writer copies (row by row only)


def number(text: Any) -> Any:
    """A csv value as predict() gets it: a number when it reads as one, None when empty, else the text."""
    if not text:
        return None
    if not isinstance(text, str) or text[0] not in _NUMBER_START:
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    digits = text.strip().lstrip("+-")
    return int(text) if digits.isdigit() and digits.isascii() else value


def json_default(value: Any) -> Any:
    """A value JSON has no type for: a date or time as ISO text, bytes as hex, a decimal as a float, else text."""
    iso = getattr(value, "isoformat", None)
    if callable(iso):
        return iso()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class Source:
    """An input file opened for one call: its batches from row `start`, and the writer of its output."""

    def __init__(self, path: str, fmt: str, start: int, batch_size: int, columnar: bool = True):
        if fmt not in FORMATS:
            raise FormatError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
        from akerbp.mlops.batch import columnar as fast

        self.path, self.fmt, self.start, self.batch_size = path, fmt, start, batch_size
        self.columns: list[tuple[str, str]] | None = None
        if fmt == ".parquet":
            self.columns = fast.parquet_columns(path)
        elif fmt == ".csv" and columnar:
            self.columns = fast.csv_columns(path)
        self.columnar = self.columns is not None

    def batches(self) -> Iterator[Batch]:
        if self.columnar:
            from akerbp.mlops.batch import columnar as fast

            assert self.columns is not None
            return fast.read(self.fmt, self.path, self.columns, self.start, self.batch_size)
        rows = _csv_rows(self.path, self.start) if self.fmt == ".csv" else _jsonl_rows(self.path, self.start)
        return _batched(rows, self.start, self.batch_size)

    def writer(self, target: str):
        if self.columnar:
            from akerbp.mlops.batch import columnar as fast

            assert self.columns is not None
            return fast.Writer(target, self.fmt, self.path, self.columns, self.start)
        return RowWriter(target, self.fmt, self.path)


def _batched(rows: Iterator[tuple[dict | None, Any, str | None]], start: int, size: int) -> Iterator[Batch]:
    batch = Batch(start, [], {}, [])
    for record, original, error in rows:
        if error is not None:
            batch.errors[len(batch.records)] = error
        batch.records.append(record)
        assert batch.originals is not None
        batch.originals.append(original)
        if len(batch.records) >= size:
            yield batch
            batch = Batch(batch.start + len(batch.records), [], {}, [])
    if batch.records:
        yield batch


def _csv_rows(path: str, start: int) -> Iterator[tuple[dict | None, Any, str | None]]:
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
                yield None, fields, f"{len(fields)} fields, the header has {width}"
                continue
            yield {name: number(value) for name, value in zip(header, fields)}, fields, None


def csv_header(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), None) or []


def _jsonl_rows(path: str, start: int) -> Iterator[tuple[dict | None, Any, str | None]]:
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
                yield None, None, f"not JSON: {e}"
                continue
            if not isinstance(record, dict):
                yield None, None, f"a JSON {type(record).__name__}, not an object"
                continue
            yield record, record, None


def prediction_columns(prediction: Any) -> dict[str, Any]:
    """The output columns of one row's prediction."""
    return dict(prediction) if isinstance(prediction, dict) else {PREDICTION: prediction}


def _plain(value: Any) -> Any:
    """A value as a csv cell: numbers and text as they are, None as empty, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, default=json_default)


class RowWriter:
    """Rows written one at a time to a csv or jsonl file (what the row-by-row readers read)."""

    def __init__(self, path: str, fmt: str, source: str):
        self.path, self.fmt = path, fmt
        self.rows = 0
        self.columns: list[str] | None = None  # the prediction columns, fixed by the first row
        self._file = open(path, "w", newline="" if fmt == ".csv" else None, encoding="utf-8")
        if fmt == ".csv":
            self._csv = csv.writer(self._file)
            self._header = csv_header(source)

    def write_batch(self, batch: Batch, ok: list[bool] | None, predictions: list) -> None:
        assert batch.originals is not None
        for i, (original, prediction) in enumerate(zip(batch.originals, predictions)):
            if ok is None or ok[i]:
                self.write(original, prediction)

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
        else:
            self._file.write(json.dumps({**original, **columns}, default=json_default) + "\n")
        self.rows += 1

    def close(self) -> None:
        if self.fmt == ".csv" and self.columns is None:  # no row predicted: the header alone
            self._csv.writerow([*self._header, PREDICTION])
        self._file.close()
