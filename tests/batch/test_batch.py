"""Batch executions end to end: the template model's prediction service deployed once to a local CDF, then
batch.run over csv, jsonl and parquet files in CDF, read back through the SDK."""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Iterator

import duckdb
import pytest

from akerbp.mlops import batch
from akerbp.mlops.batch import driver, function
from akerbp.mlops.deployment.deploy import deploy_model
from akerbp.mlops.deployment.target import Target
from akerbp.mlops.errors import UsageError
from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.settings import load_settings
from akerbp.mlops.vocabulary import batch_function_external_id, batch_output_external_id
from support import change_code, copy_template

MODEL, ENV = "well_density", "dev"
LIVE, BATCH = f"{MODEL}-prediction-{ENV}", batch_function_external_id(MODEL, ENV)
ROWS = 100_000
BAD_EVERY = 10_000  # row 7, 10007, ... has GR "bad" (csv) or NaN (parquet)


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cdf = LocalCDF(root / "cdf", isolation="shared-no-install", limits=Limits(call_timeout_s=120)).start()
        self.client = self.cdf.client(project="test")
        self.repo = copy_template(root / "repo")
        self.deploy()
        self.said: list[str] = []

    def deploy(self) -> None:
        (settings,) = load_settings(self.repo / "mlops_settings.py")
        result = deploy_model(settings, "prediction", ENV, Target(ENV, client=self.client), dry_run=False,
                              force=False, timeout=300, progress=lambda message: None)
        assert result.ok, result.message

    def upload(self, xid: str, content: bytes) -> None:
        self.client.files.upload_bytes(content, external_id=xid, name=xid.rsplit("/", 1)[-1], overwrite=True)

    def run(self, input, **kw) -> driver.BatchResult:
        return batch.run(self.client, MODEL, ENV, input, say=self.said.append, **kw)

    def download(self, xid: str) -> bytes:
        return self.client.files.download_bytes(external_id=xid)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("batch"))
    try:
        yield w
    finally:
        w.cdf.stop()


def well_rows(n: int) -> list[tuple]:
    return [(80.0 + i % 50, 0.2 + (i % 7) / 100, 2000.0 + i % 1000, f"w{i}") for i in range(n)]


def csv_bytes(n: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["GR", "NPHI", "DEPTH", "id"])
    for i, row in enumerate(well_rows(n)):
        writer.writerow(("bad", *row[1:]) if i % BAD_EVERY == 7 else row)
    return out.getvalue().encode()


def expected(world: World, rows: list) -> list[float]:
    """The template's own predictions of rows (GR, NPHI, DEPTH, ...), from its code and artifact in the repo."""
    from akerbp.mlops.services.model_import import import_model

    model = import_model(world.repo, "model_code.model", "prediction")
    state = model.initialization(str(world.repo / "model_artifact"), {})
    return model.predict({"data": [dict(zip(("GR", "NPHI", "DEPTH"), r[:3])) for r in rows]}, state, {})


def test_a_100k_row_csv_is_predicted_with_its_bad_rows_listed(world: World) -> None:
    world.upload("wells/big.csv", csv_bytes(ROWS))

    result = world.run("wells/big.csv", batch_size=2000, execution="e1")

    bad = [i for i in range(ROWS) if i % BAD_EVERY == 7]
    assert result.ok and (result.rows_in, result.rows_out, result.bad_row_count) == (ROWS, ROWS - len(bad), len(bad))
    assert [b["row"] for b in result.bad_rows] == bad
    assert all(b["file"] == "wells/big.csv" and "'GR' must be a number, got 'bad'" in b["error"]
               for b in result.bad_rows)
    out = batch_output_external_id(MODEL, ENV, "e1", "wells/big.csv")
    assert result.outputs == [out]
    table = list(csv.reader(io.StringIO(world.download(out).decode())))
    assert table[0] == ["GR", "NPHI", "DEPTH", "id", "prediction"]
    assert len(table) - 1 == ROWS - len(bad)
    good = [r for i, r in enumerate(well_rows(ROWS)) if i % BAD_EVERY != 7]
    assert [row[3] for row in table[1:]] == [r[3] for r in good]  # the input's rows, in order
    got = [float(row[4]) for row in table[1::997]]
    assert got == pytest.approx(expected(world, good[::997]))
    meta = world.client.files.retrieve(external_id=out).metadata
    assert meta == {"source": "wells/big.csv", "source_id": str(world.client.files.retrieve(
        external_id="wells/big.csv").id), "model_id": result.model_id, "execution": "e1", "rows": str(ROWS),
        "bad_rows": str(len(bad)), "first_row": "0", "format": "csv"}
    assert result.model_id.startswith(f"{MODEL}/{ENV}/")


def test_a_parquet_file_keeps_its_types_and_lists_null_and_nan_rows(world: World, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT CASE WHEN i % {BAD_EVERY} = 7 THEN 'NaN'::DOUBLE WHEN i = 5 THEN NULL
                                      ELSE 80.0 + i % 50 END AS GR,
                                 0.2 + (i % 7) / 100 AS NPHI, 2000.0 + i % 1000 AS DEPTH, i AS id,
                                 DATE '2024-01-01' + (i % 30)::INT AS day
                          FROM range({ROWS}) t(i)) TO '{source}' (FORMAT parquet)""")
    world.upload("wells/big.parquet", source.read_bytes())

    result = world.run("wells/big.parquet", batch_size=5000, execution="e2")

    bad = sorted([5] + [i for i in range(ROWS) if i % BAD_EVERY == 7])
    assert result.ok and (result.rows_in, result.rows_out) == (ROWS, ROWS - len(bad))
    assert [b["row"] for b in result.bad_rows] == bad
    target = tmp_path / "out.parquet"
    target.write_bytes(world.download(result.outputs[0]))
    columns = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{target}')").fetchall()
    assert [(c[0], c[1]) for c in columns] == [("GR", "DOUBLE"), ("NPHI", "DOUBLE"), ("DEPTH", "DECIMAL(21,1)"),
                                               ("id", "BIGINT"), ("day", "DATE"), ("prediction", "DOUBLE")]
    (count, ids_sum) = con.execute(f"SELECT count(*), sum(id) FROM read_parquet('{target}')").fetchone()
    assert count == ROWS - len(bad) and ids_sum == sum(range(ROWS)) - sum(bad)
    first = con.execute(f"SELECT GR, NPHI, DEPTH::DOUBLE, prediction FROM read_parquet('{target}') WHERE id = 0"
                        ).fetchone()  # the decimal reached predict() as a float, and stays a decimal in the output
    assert first[3] == pytest.approx(expected(world, [first[:3]])[0])


def test_jsonl_lines_that_are_not_objects_are_bad_rows(world: World) -> None:
    lines = [json.dumps({"GR": 80, "NPHI": 0.25, "DEPTH": 2000, "well": "a"}), "not json", "[1, 2]", "",
             json.dumps({"GR": 90, "NPHI": 0.3, "DEPTH": 2500, "well": "b"}), json.dumps({"GR": 1})]
    world.upload("wells/small.jsonl", ("\n".join(lines) + "\n").encode())

    result = world.run("wells/small.jsonl", execution="e3")

    assert (result.rows_in, result.rows_out) == (5, 2)
    assert [(b["row"], b["error"].split(":")[0]) for b in result.bad_rows] == [
        (1, "not JSON"), (2, "a JSON list, not an object"), (4, "ModelException")]
    out = [json.loads(line) for line in world.download(result.outputs[0]).decode().splitlines()]
    assert [r["well"] for r in out] == ["a", "b"]
    assert [r["prediction"] for r in out] == pytest.approx(expected(world, [(80, 0.25, 2000), (90, 0.3, 2500)]))


def test_a_csv_duckdb_cannot_read_goes_row_by_row_and_lists_the_ragged_row(world: World) -> None:
    world.upload("wells/ragged.csv", b"GR,NPHI,DEPTH,id\n80,0.25,2000,w1\n81,0.25,2000,w2,extra\n82,0.3,2100,0012\n")

    result = world.run("wells/ragged.csv", execution="e6")

    assert (result.rows_in, result.rows_out) == (3, 2)
    assert [(b["row"], b["error"]) for b in result.bad_rows] == [(1, "5 fields, the header has 4")]
    lines = world.download(result.outputs[0]).decode().splitlines()
    assert lines[0] == "GR,NPHI,DEPTH,id,prediction" and lines[2].startswith("82,0.3,2100,0012,")  # text kept


def test_a_prefix_predicts_every_file_under_it_into_the_output_prefix(world: World) -> None:
    for name, n in (("a.csv", 3), ("sub/b.csv", 5), ("c.csv", 0)):
        world.upload(f"many/{name}", csv_bytes(n))

    result = world.run("many/", output="preds/", execution="e4")

    assert result.ok and [(f.source, f.rows, f.outputs) for f in result.files] == [
        ("many/a.csv", 3, ["preds/a.csv"]), ("many/c.csv", 0, ["preds/c.csv"]),
        ("many/sub/b.csv", 5, ["preds/sub/b.csv"])]
    assert world.download("preds/c.csv").decode().splitlines() == ["GR,NPHI,DEPTH,id,prediction"]
    assert world.client.files.retrieve(external_id="preds/sub/b.csv").metadata["execution"] == "e4"


def test_a_file_beyond_one_call_is_continued_by_the_next_calls_in_parts(world: World) -> None:
    world.upload("wells/long.csv", csv_bytes(2500))

    result = world.run("wells/long.csv", batch_size=1000, execution="e5", call_seconds=0)  # stop after each batch

    (f,) = result.files
    base = batch_output_external_id(MODEL, ENV, "e5", "wells/long.csv")
    assert f.calls == 3 and f.outputs == [f"{base}.rows-0-1000", f"{base}.rows-1000-2000", f"{base}.rows-2000-2500"]
    assert (result.rows_in, result.rows_out, [b["row"] for b in result.bad_rows]) == (2500, 2499, [7])
    parts = [list(csv.reader(io.StringIO(world.download(x).decode()))) for x in f.outputs]
    assert [len(p) - 1 for p in parts] == [999, 1000, 500] and parts[2][-1][3] == "w2499"
    assert world.client.files.retrieve(external_id=f.outputs[1]).metadata["first_row"] == "1000"


def test_usage_errors_name_what_is_wrong_before_anything_runs(world: World) -> None:
    world.upload("odd/table.xlsx", b"x")
    calls_before = len(world.client.functions.calls.list(function_external_id=BATCH, limit=None))

    with pytest.raises(driver.NoInputFiles, match="no file has external id 'nope.csv'"):
        world.run("nope.csv")
    with pytest.raises(driver.NoInputFiles, match="starting with 'empty/'"):
        world.run("empty/")
    with pytest.raises(UsageError, match="unknown format of 'odd/table.xlsx'"):
        world.run("odd/")
    with pytest.raises(function.NoLivePrediction, match="no live prediction service of model 'well_density' in test"):
        batch.run(world.client, MODEL, "test", "wells/long.csv")
    with pytest.raises(UsageError, match="batch size"):
        world.run("wells/long.csv", batch_size=0)
    assert len(world.client.functions.calls.list(function_external_id=BATCH, limit=None)) == calls_before


def test_the_batch_function_is_reused_until_the_live_prediction_changes(world: World) -> None:
    world.upload("wells/tiny.csv", csv_bytes(4))
    first = world.client.functions.retrieve(external_id=BATCH)
    assert first.metadata[function.LIVE_HASH_KEY] == world.client.functions.retrieve(
        external_id=LIVE).metadata["mlops_hash"]

    again = world.run("wells/tiny.csv")

    assert again.function_outcome == "unchanged"
    assert world.client.functions.retrieve(external_id=BATCH).id == first.id

    change_code(world.repo, "batch")
    world.deploy()
    started = time.monotonic()
    remade = world.run("wells/tiny.csv")

    live = world.client.functions.retrieve(external_id=LIVE)
    now = world.client.functions.retrieve(external_id=BATCH)
    assert remade.function_outcome == "updated" and remade.ok and remade.rows_out == 4
    assert now.id != first.id and now.metadata[function.LIVE_HASH_KEY] == live.metadata["mlops_hash"]
    assert now.metadata[function.LIVE_FUNCTION_KEY] == str(live.id)
    code_files = world.client.files.list(external_id_prefix=f"mlops-code/{BATCH}/", limit=None)
    assert [f.id for f in code_files] == [now.file_id]  # the old batch code went with the old function
    assert time.monotonic() - started < 60
