"""(c) PostgreSQL in and out: load N rows through QueryForge vs raw COPY FROM STDIN; extract vs COPY TO.

Load: a pipeline reads a Parquet file of N rows and loads it (mode replace, publish included) into
a fresh table of a PostgreSQL database. The floor is psycopg's `COPY orders FROM STDIN (FORMAT csv)`
of the same rows into a new table, streamed from a CSV file prepared beforehand (the issue's floor:
raw `adbc_ingest` measures about 1.16x of it). Two references are printed too: raw `adbc_ingest` of
the Parquet file, and `COPY ... (FORMAT binary)` from a file already in PostgreSQL's binary COPY
format -- a lower bound no real input reaches, since the data arrives converted for free.

Extract: a pipeline reads that table (ADBC, binary COPY TO) and writes it to a Parquet file; the floor
is `COPY orders TO STDOUT (FORMAT binary)` written to a file. Sides alternate; medians are reported;
each load's row count and sum of ids are checked against the source so the sides do equal work.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as adbc_pg
import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from queryforge.workspace import Workspace

from .common import (
    DATA_DIR,
    Clock,
    Outcome,
    cached,
    fresh_workspace,
    human_rows,
    log,
    median,
    warm_file_cache,
)

NAME = "postgres_io"
GOAL_RATIO = 1.25
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
COLUMNS = "id BIGINT, customer_id BIGINT, amount DOUBLE PRECISION, status TEXT, created_at TIMESTAMP"


def inputs(rows: int) -> tuple[Path, Path]:
    """Parquet and CSV files of the same `rows` orders (cached under bench/.data/)."""
    source = (
        f"SELECT i AS id, i % 50000 AS customer_id, round((i % 10007) * 0.37, 2)::DOUBLE AS amount, "
        f"['placed','shipped','returned','cancelled'][1 + i % 4] AS status, "
        f"TIMESTAMP '2024-01-01' + to_seconds(i % 31536000) AS created_at FROM range({rows}) t(i)"
    )

    def build(kind: str) -> Any:
        def write(tmp: Path) -> None:
            fmt = "(FORMAT parquet)" if kind == "parquet" else "(FORMAT csv, HEADER false)"
            with duckdb.connect() as con:
                con.execute(f"COPY ({source}) TO '{tmp}' {fmt}")

        return write

    parquet = cached(DATA_DIR / f"pg_orders_{human_rows(rows)}.parquet", build("parquet"))
    csv = cached(DATA_DIR / f"pg_orders_{human_rows(rows)}.csv", build("csv"))
    return parquet, csv


class Database:
    """A fresh PostgreSQL database for the benchmark, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"qf_bench_{secrets.token_hex(4)}"
        with psycopg.connect(ADMIN, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as con:
            cur = con.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    def drop(self) -> None:
        with psycopg.connect(ADMIN, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def raw_copy_in(db: Database, source: Path, fmt: str) -> float:
    """`COPY orders FROM STDIN` of a prepared file in `fmt` (csv or binary) into a new table."""
    started = time.perf_counter()
    with psycopg.connect(db.url) as con:
        con.execute(f"CREATE TABLE orders ({COLUMNS})".encode())
        with (
            con.cursor() as cur,
            cur.copy(f"COPY orders FROM STDIN (FORMAT {fmt})") as copy,
            source.open("rb") as f,
        ):
            while chunk := f.read(8 * 1024 * 1024):
                copy.write(chunk)
        con.commit()
    return time.perf_counter() - started


def raw_adbc_ingest(db: Database, parquet: Path) -> float:
    started = time.perf_counter()
    reader = pq.ParquetFile(parquet).iter_batches(batch_size=1_000_000)
    schema = pq.read_schema(parquet)
    with adbc_pg.connect(db.url) as con, con.cursor() as cur:
        cur.adbc_ingest("orders", pa.RecordBatchReader.from_batches(schema, reader), mode="create")
        con.commit()
    return time.perf_counter() - started


def raw_copy_out(db: Database, target: Path) -> float:
    started = time.perf_counter()
    with (
        psycopg.connect(db.url) as con,
        con.cursor() as cur,
        target.open("wb") as out,
        cur.copy("COPY orders TO STDOUT (FORMAT binary)") as copy,
    ):
        for data in copy:
            out.write(data)
    return time.perf_counter() - started


def checksum(db: Database) -> tuple[int, int]:
    row = db.sql("SELECT count(*), sum(id) FROM orders")[0]
    return int(row[0]), int(row[1])


def run(rows: int, repeat: int, profile: bool = False) -> list[Outcome]:
    parquet, csv = inputs(rows)
    warm_file_cache(parquet)
    warm_file_cache(csv)
    with duckdb.connect() as con:
        expected = tuple(
            int(v) for v in con.execute(f"SELECT count(*), sum(id) FROM '{parquet}'").fetchall()[0]
        )
    db = Database()
    ws = fresh_workspace(NAME)
    binary = DATA_DIR / f"pg_orders_{human_rows(rows)}.pgcopy"
    try:
        if not binary.exists():  # PostgreSQL's own binary COPY format of the same rows
            raw_copy_in(db, csv, "csv")
            raw_copy_out(db, binary)
            db.sql("DROP TABLE orders")
        warm_file_cache(binary)
        config = yaml.safe_load((ws.root / "queryforge.yaml").read_text())
        config["connections"]["pg"] = {"url": db.url, "writable": True}
        (ws.root / "queryforge.yaml").write_text(yaml.safe_dump(config))
        (ws.root / "pipelines" / "load.yaml").write_text(
            "name: load\nsteps:\n"
            f"  - id: src\n    extract: {{path: '{parquet}'}}\n"
            "  - id: out\n    load: {input: src, connection: pg, table: orders, mode: replace}\n"
        )
        (ws.root / "pipelines" / "extract.yaml").write_text(
            "name: extract\nsteps:\n"
            "  - id: src\n    extract: {connection: pg, table: orders}\n"
            "  - id: out\n    load: {input: src, path: out/orders.parquet}\n"
        )
        ws.close()
        ws = Workspace(ws.root, settings=ws.settings)
        loads: dict[str, list[float]] = {"queryforge": [], "copy": [], "copy_binary": [], "adbc": []}
        extracts: dict[str, list[float]] = {"queryforge": [], "copy": []}
        cpu: list[float] = []
        for rep in range(repeat):
            db.sql("DROP TABLE IF EXISTS orders")
            loads["copy_binary"].append(raw_copy_in(db, binary, "binary"))
            assert checksum(db) == expected
            db.sql("DROP TABLE orders")
            loads["copy"].append(raw_copy_in(db, csv, "csv"))
            assert checksum(db) == expected
            db.sql("DROP TABLE orders")
            loads["adbc"].append(raw_adbc_ingest(db, parquet))
            assert checksum(db) == expected
            db.sql("DROP TABLE orders")
            started = Clock.now()
            outcome = ws.run("pipelines/load.yaml")
            spent = Clock.now().since(started)
            assert outcome.status == "succeeded", outcome.error
            loads["queryforge"].append(spent.wall)
            cpu.append(spent.cpu)
            assert checksum(db) == expected

            extracts["copy"].append(raw_copy_out(db, DATA_DIR / "pg_orders_copy.bin"))
            started = Clock.now()
            outcome = ws.run("pipelines/extract.yaml")
            extracts["queryforge"].append(Clock.now().since(started).wall)
            assert outcome.status == "succeeded", outcome.error
            assert pq.read_metadata(ws.root / "out" / "orders.parquet").num_rows == rows
            log(
                f"[{NAME}] rep {rep + 1}/{repeat}: load qf {loads['queryforge'][-1]:.2f}s copy csv "
                f"{loads['copy'][-1]:.2f}s copy binary {loads['copy_binary'][-1]:.2f}s adbc "
                f"{loads['adbc'][-1]:.2f}s; extract qf {extracts['queryforge'][-1]:.2f}s copy "
                f"{extracts['copy'][-1]:.2f}s"
            )
    finally:
        ws.close()
        db.drop()
    load_ratio = median(loads["queryforge"]) / median(loads["copy"])
    adbc_ratio = median(loads["adbc"]) / median(loads["copy"])
    binary_ratio = median(loads["copy_binary"]) / median(loads["copy"])
    extract_ratio = median(extracts["queryforge"]) / median(extracts["copy"])
    label = human_rows(rows)
    load_line = (
        f"{NAME}/load  {label} rows: queryforge {median(loads['queryforge']):.2f}s vs raw COPY FROM STDIN "
        f"(csv) {median(loads['copy']):.2f}s = {load_ratio:.2f}x (raw adbc_ingest {adbc_ratio:.2f}x; a "
        f"pre-rendered binary COPY file {binary_ratio:.2f}x; "
        f"goal <= {GOAL_RATIO}x: {'met' if load_ratio <= GOAL_RATIO else 'NOT met'})"
    )
    extract_line = (
        f"{NAME}/extract {label} rows to Parquet: queryforge {median(extracts['queryforge']):.2f}s vs raw "
        f"COPY TO {median(extracts['copy']):.2f}s = {extract_ratio:.2f}x "
        f"(goal <= {GOAL_RATIO}x: {'met' if extract_ratio <= GOAL_RATIO else 'NOT met'})"
    )
    return [
        Outcome(
            name=f"{NAME}/load",
            line=load_line,
            figures={
                "rows": rows,
                "seconds": loads,
                "ratio": load_ratio,
                "adbc_ratio": adbc_ratio,
                "binary_copy_ratio": binary_ratio,
            },
            meets_goal=load_ratio <= GOAL_RATIO,
        ),
        Outcome(
            name=f"{NAME}/extract",
            line=extract_line,
            figures={"rows": rows, "seconds": extracts, "ratio": extract_ratio},
            meets_goal=extract_ratio <= GOAL_RATIO,
        ),
    ]
