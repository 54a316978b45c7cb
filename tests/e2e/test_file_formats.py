"""File extracts a user relies on: gzip, globs over several files, NDJSON and Parquet, file loads."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from queryforge.workspace import Workspace


def write(ws: Path, name: str, text: str) -> None:
    (ws / "pipelines" / f"{name}.yaml").write_text(text)


def count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])


def test_gzip_glob_ndjson_and_parquet_extracts_match_duckdb(demo: Path) -> None:
    data = demo / "data"
    with (data / "orders.csv").open("rb") as src, gzip.open(data / "orders.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (data / "parts").mkdir()
    for part in ("a", "b"):
        shutil.copy(data / "orders.csv", data / "parts" / f"{part}.csv")
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM read_csv('{data / 'customers.csv'}')) "
            f"TO '{data / 'c.ndjson'}' (FORMAT json)"
        )
    write(
        demo,
        "formats",
        """
name: formats
steps:
  - id: zipped
    extract: {path: data/orders.csv.gz}
  - id: parts
    extract: {path: "data/parts/*.csv"}
  - id: everything
    union: {inputs: [zipped, parts]}
  - id: people
    extract: {path: data/c.ndjson}
  - id: products
    extract: {path: data/products.parquet}
  - id: save_orders
    load: {input: everything, table: all_orders}
  - id: save_people
    load: {input: people, table: people}
  - id: save_products
    load: {input: products, path: out/products_copy.parquet}
""",
    )
    with Workspace(demo) as ws:
        outcome = ws.run("formats")
    assert outcome.status == "succeeded", outcome.error
    with duckdb.connect() as con:
        orders = count(con, f"SELECT count(*) FROM read_csv('{data / 'orders.csv'}')")
        customers = count(con, f"SELECT count(*) FROM read_csv('{data / 'customers.csv'}')")
        expected_sum = con.execute(f"SELECT sum(amount) FROM read_csv('{data / 'orders.csv'}')").fetchall()[
            0
        ][0]
    with duckdb.connect(str(demo / ".queryforge" / "warehouse.duckdb"), read_only=True) as wh:
        assert count(wh, "SELECT count(*) FROM all_orders") == 3 * orders
        got_sum = wh.execute("SELECT sum(amount) FROM all_orders").fetchall()[0][0]
        assert round(got_sum, 2) == round(3 * expected_sum, 2)
        assert count(wh, "SELECT count(*) FROM people") == customers
    copy = pq.read_table(demo / "out" / "products_copy.parquet")
    assert copy.num_rows == pq.read_table(data / "products.parquet").num_rows
    assert copy.schema.names == pq.read_table(data / "products.parquet").schema.names


def test_every_publish_is_written_to_the_audit_log(demo: Path) -> None:
    with Workspace(demo) as ws:
        sandbox = ws.run("customers_clean", sandbox=True)
        assert ws.repo.list_audit(action="publish") == []
        ws.commit(sandbox.run_id)
        direct = ws.run("daily_sales")
        entries = ws.repo.list_audit(action="publish")
        assert {e["details"]["run_id"] for e in entries} == {sandbox.run_id, direct.run_id}
        assert any("warehouse.customers" in e["reason"] for e in entries)
        assert ws.repo.verify_audit_chain() is None
