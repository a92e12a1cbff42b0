"""The batch formats on files here (no CDF): what predict() gets from a csv, and what a call's part writes."""
from __future__ import annotations

from pathlib import Path

from akerbp.mlops.batch import formats


def test_a_late_value_that_is_no_number_reaches_predict_as_its_text_and_spoils_only_its_row(tmp_path: Path) -> None:
    source = tmp_path / "late.csv"
    rows = [f"80,0.25,2000,w{i}" for i in range(30_000)]  # beyond DuckDB's sniffing sample
    source.write_text("GR,NPHI,DEPTH,id\n" + "\n".join(rows + ["n/a,0.2,1e400,x", "81,2.5x,9223372036854775808,0012"])
                      + "\n")

    opened = formats.Source(str(source), ".csv", 29_999, 1000)
    (batch,) = list(opened.batches())

    assert opened.columnar and [n for n, _ in opened.columns or []] == ["GR", "NPHI", "DEPTH", "id"]
    assert batch.start == 29_999 and batch.records == [
        {"GR": 80, "NPHI": 0.25, "DEPTH": 2000, "id": "w29999"},
        {"GR": "n/a", "NPHI": 0.2, "DEPTH": float("inf"), "id": "x"},
        {"GR": 81, "NPHI": "2.5x", "DEPTH": 9223372036854775808, "id": 12}]
    by_rows = formats.Source(str(source), ".csv", 29_999, 1000, columnar=False)
    assert [r for b in by_rows.batches() for r in b.records] == batch.records  # the same as the csv module's


def test_a_part_holds_its_rows_only_with_the_input_text_kept(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n" + "".join(f"{i},0{i}\n" for i in range(10)))
    opened = formats.Source(str(source), ".csv", 4, 3)
    writer = opened.writer(str(tmp_path / "out.csv"))

    batch = next(iter(opened.batches()))
    writer.write_batch(batch, [True, False, True], [0.5, None, 1.5])
    writer.close()

    assert (tmp_path / "out.csv").read_text().splitlines() == ["a,b,prediction", "4,04,0.5", "6,06,1.5"]
