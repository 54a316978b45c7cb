"""`connections test` reports what a connection's database role may do beyond its purpose.

Against the real PostgreSQL and MariaDB servers, with the roles that docs/connectors.md documents
(`tests/integration/roles.py` runs exactly those statements): the superuser is `danger`, the
documented reader and writer have nothing to report, and a read-only connection whose role was
granted more is flagged. The documented grants are also shown to be enough (the writer publishes,
the reader reads what it published) and no more (the reader cannot write or read other schemas).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

from queryforge.connectors.base import ConnectionConfig, RoleFinding, connector_for
from queryforge.connectors.mysql import Grant, mysql_findings
from queryforge.workspace import Workspace
from tests.conftest import CliResult
from tests.integration.db_cases import copy_pipeline, open_workspace
from tests.integration.roles import RoleDatabase, mariadb_user, pg_role


def report(url: str, tmp_path: Path, writable: bool = False) -> list[RoleFinding]:
    connector = connector_for(ConnectionConfig("db", url, writable=writable), tmp_path)
    try:
        return connector.role_report()
    finally:
        connector.close()


def codes(findings: list[RoleFinding]) -> dict[str, str]:
    return {f.code: f.severity for f in findings}


@pytest.fixture
def pg_ws(tmp_path: Path, pg_least_privilege: RoleDatabase) -> Iterator[Workspace]:
    ws = open_workspace(tmp_path / "ws", pg_least_privilege.connections())
    yield ws
    ws.close()


@pytest.fixture
def my_ws(tmp_path: Path, mariadb_least_privilege: RoleDatabase) -> Iterator[Workspace]:
    ws = open_workspace(tmp_path / "ws", mariadb_least_privilege.connections())
    yield ws
    ws.close()


# ------------------------------------------------------------------ PostgreSQL


@pytest.mark.postgres
def test_postgres_superuser_is_one_danger_finding(pg_least_privilege: RoleDatabase, tmp_path: Path) -> None:
    findings = report(pg_least_privilege.superuser_url, tmp_path, writable=True)
    assert [(f.code, f.severity) for f in findings] == [("superuser", "danger")]
    assert "NOSUPERUSER" in findings[0].fix and "#least-privilege" in findings[0].fix


@pytest.mark.postgres
def test_postgres_documented_roles_have_nothing_to_report(
    pg_least_privilege: RoleDatabase, tmp_path: Path
) -> None:
    assert report(pg_least_privilege.reader_url, tmp_path) == []
    assert report(pg_least_privilege.writer_url, tmp_path, writable=True) == []


@pytest.mark.postgres
def test_postgres_documented_writer_on_a_read_only_connection_warns(
    pg_least_privilege: RoleDatabase, tmp_path: Path
) -> None:
    """The writer may create schemas and owns its tables: fine when writable, not when read-only."""
    findings = report(pg_least_privilege.writer_url, tmp_path, writable=False)
    assert codes(findings) == {"create_in_database": "warn", "create_in_schema": "warn"}


PG_GRANT = ["GRANT CONNECT ON DATABASE {db} TO {role}", "GRANT USAGE ON SCHEMA public TO {role}"]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("grants", "expected"),
    [
        pytest.param(["GRANT SELECT, INSERT ON customers TO {role}"], {"write_grant": "warn"}, id="insert"),
        pytest.param(["GRANT TRUNCATE ON orders TO {role}"], {"write_grant": "warn"}, id="truncate"),
        pytest.param(["GRANT CREATE ON SCHEMA public TO {role}"], {"create_in_schema": "warn"}, id="create"),
        pytest.param(["ALTER ROLE {role} CREATEDB"], {"createdb": "warn"}, id="createdb"),
        pytest.param(["ALTER ROLE {role} CREATEROLE"], {"createrole": "danger"}, id="createrole"),
        pytest.param(["GRANT pg_read_server_files TO {role}"], {"server_files": "danger"}, id="server-files"),
        pytest.param(["GRANT pg_execute_server_program TO {role}"], {"server_files": "danger"}, id="program"),
        pytest.param(["GRANT pg_signal_backend TO {role}"], {"signal_backend": "warn"}, id="signal"),
        pytest.param(
            ["GRANT EXECUTE ON FUNCTION pg_read_file(text) TO {role}"],
            {"outside_functions": "danger"},
            id="pg_read_file",
        ),
        pytest.param(
            [
                "GRANT USAGE ON SCHEMA dblink TO {role}",
                "GRANT EXECUTE ON FUNCTION dblink.dblink_exec(text, text) TO {role}",
            ],
            {"outside_functions": "danger"},
            id="dblink_exec",
        ),
        pytest.param(
            ["GRANT EXECUTE ON FUNCTION query_to_xml(text, boolean, boolean, text) TO {role}"],
            {"sql_string_functions": "warn"},
            id="query_to_xml",
        ),
    ],
)
def test_postgres_read_only_role_with_more_power_is_flagged(
    pg_least_privilege: RoleDatabase, tmp_path: Path, grants: list[str], expected: dict[str, str]
) -> None:
    statements = [g.replace("{db}", pg_least_privilege.database) for g in [*PG_GRANT, *grants]]
    with pg_role(pg_least_privilege, statements) as url:
        findings = report(url, tmp_path)
        assert codes(findings) == expected
        assert all(f.fix and "\n" not in f.fix for f in findings)
        if "write_grant" in expected:
            assert "public." in findings[0].message
            assert report(url, tmp_path, writable=True) == []  # writing is its purpose then


@pytest.mark.postgres
def test_postgres_dblink_without_schema_usage_is_not_reported(
    pg_least_privilege: RoleDatabase, tmp_path: Path
) -> None:
    """EXECUTE alone does not make dblink callable: its schema must be usable too."""
    grants = [*PG_GRANT, "GRANT EXECUTE ON FUNCTION dblink.dblink_exec(text, text) TO {role}"]
    with pg_role(pg_least_privilege, [g.replace("{db}", pg_least_privilege.database) for g in grants]) as url:
        assert report(url, tmp_path) == []


@pytest.mark.postgres
def test_postgres_documented_grants_are_enough_and_no_more(
    pg_least_privilege: RoleDatabase, pg_ws: Workspace
) -> None:
    """The writer publishes (twice, so a replace drops its own table); the reader reads that, not more."""
    db = pg_least_privilege
    path = copy_pipeline(pg_ws, "copy", ("reader", "customers"), ("writer", "analytics.customers_copy"))
    for _ in range(2):
        assert pg_ws.run(path).status == "succeeded"
    with psycopg.connect(db.reader_url, autocommit=True) as reader:
        assert reader.execute("SELECT count(*) FROM analytics.customers_copy").fetchone() == (3,)
        for statement in (
            "INSERT INTO customers VALUES (9, 'x', NULL, NULL)",
            "DELETE FROM analytics.customers_copy",
            f"SELECT * FROM {db.private_table}",
            "CREATE TABLE public.mine (id int)",
            "SELECT query_to_xml('select 1', true, false, '')",
            "SELECT dblink.dblink_exec('dbname=postgres', 'select 1')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)


# ------------------------------------------------------------------ MariaDB


def test_mariadb_root_is_one_danger_finding(mariadb_least_privilege: RoleDatabase, tmp_path: Path) -> None:
    findings = report(mariadb_least_privilege.superuser_url, tmp_path, writable=True)
    assert [(f.code, f.severity) for f in findings] == [("superuser", "danger")]


def test_mariadb_documented_users_have_nothing_to_report(
    mariadb_least_privilege: RoleDatabase, tmp_path: Path
) -> None:
    assert report(mariadb_least_privilege.reader_url, tmp_path) == []
    assert report(mariadb_least_privilege.writer_url, tmp_path, writable=True) == []
    assert codes(report(mariadb_least_privilege.writer_url, tmp_path)) == {"write_grant": "warn"}


MY_GRANT = ["GRANT SELECT ON `{db}`.* TO {user}"]


@pytest.mark.parametrize(
    ("grants", "expected"),
    [
        pytest.param(["GRANT SELECT, INSERT ON `{db}`.* TO {user}"], {"write_grant": "warn"}, id="insert"),
        pytest.param(["GRANT DROP ON `{db}`.`orders` TO {user}"], {"write_grant": "warn"}, id="drop-table"),
        pytest.param(["GRANT ALL PRIVILEGES ON `{db}`.* TO {user}"], {"write_grant": "warn"}, id="all-on-db"),
        pytest.param(["GRANT FILE ON *.* TO {user}"], {"server_files": "danger"}, id="file"),
        pytest.param(["GRANT SUPER ON *.* TO {user}"], {"super": "danger"}, id="super"),
        pytest.param(["GRANT PROCESS ON *.* TO {user}"], {"process": "warn"}, id="process"),
        pytest.param(
            ["GRANT SELECT ON `{db}`.* TO {user} WITH GRANT OPTION"],
            {"grant_option": "warn"},
            id="grant-option",
        ),
    ],
)
def test_mariadb_read_only_user_with_more_power_is_flagged(
    mariadb_least_privilege: RoleDatabase, tmp_path: Path, grants: list[str], expected: dict[str, str]
) -> None:
    statements = [g.replace("{db}", mariadb_least_privilege.database) for g in [*MY_GRANT, *grants]]
    with mariadb_user(mariadb_least_privilege, statements) as url:
        findings = report(url, tmp_path)
        assert codes(findings) == expected
        if "write_grant" in expected:
            assert mariadb_least_privilege.database in findings[0].message
            assert report(url, tmp_path, writable=True) == []


def test_mariadb_documented_grants_are_enough_and_no_more(
    mariadb_least_privilege: RoleDatabase, my_ws: Workspace
) -> None:
    """Replace twice (a swap by RENAME TABLE through the staging database), then an append."""
    db = mariadb_least_privilege
    path = copy_pipeline(my_ws, "copy", ("reader", "customers"), ("writer", "customers_copy"))
    for _ in range(2):
        assert my_ws.run(path).status == "succeeded"
    append = copy_pipeline(my_ws, "more", ("reader", "customers"), ("writer", "customers_copy"), "append")
    assert my_ws.run(append).status == "succeeded"
    user, _host = db.reader_url.removeprefix("mysql://").split("@", 1)
    name, password = user.split(":", 1)
    reader = pymysql.connect(host="127.0.0.1", port=3306, user=name, password=password, database=db.database)
    try:
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM customers_copy")
            assert cur.fetchone() == (6,)
            for statement in (
                "INSERT INTO customers VALUES (9, 'x', NULL, NULL)",
                "DELETE FROM customers_copy",
                f"SELECT * FROM {db.private_table}",
                "CREATE TABLE mine (id INT)",
                "SELECT LOAD_FILE('/etc/hostname') IS NULL",
            ):
                try:
                    cur.execute(statement)
                except pymysql.err.OperationalError as exc:
                    assert exc.args[0] in (1142, 1044), exc  # command denied / access denied
                else:
                    assert statement.startswith("SELECT LOAD_FILE") and cur.fetchone() == (1,)
    finally:
        reader.close()


# ------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("database", [pytest.param("postgres", marks=pytest.mark.postgres), "mariadb"])
def test_cli_connections_test_lists_privileges(
    database: str,
    request: pytest.FixtureRequest,
    qf: Callable[..., CliResult],
    tmp_path: Path,
) -> None:
    db: RoleDatabase = request.getfixturevalue(
        "pg_least_privilege" if database == "postgres" else "mariadb_least_privilege"
    )
    open_workspace(tmp_path / "ws", db.connections()).close()
    root = tmp_path / "ws"

    superuser = qf("connections", "test", "superuser", "--json", cwd=root)
    assert superuser.code == 0, superuser.stderr  # findings are warnings
    data = superuser.json()
    assert data["ok"] is True and data["privileges_checked"] is True
    assert [(p["code"], p["severity"]) for p in data["privileges"]] == [("superuser", "danger")]
    assert data["privileges"][0]["fix"]

    strict = qf("connections", "test", "superuser", "--strict", cwd=root)
    assert strict.code == 1
    assert "danger: " in strict.stdout and "Fix: " in strict.stdout

    reader = qf("connections", "test", "reader", "--strict", cwd=root)
    assert reader.code == 0, reader.stdout + reader.stderr
    assert db.reader in reader.stdout and "no more than the connection needs" in reader.stdout
    assert "warn" not in reader.stdout and "danger" not in reader.stdout


def test_cli_connections_test_of_a_connector_without_roles(
    qf: Callable[..., CliResult], tmp_path: Path
) -> None:
    Workspace.init(tmp_path / "ws", bare=True).close()
    result = qf("connections", "test", "warehouse", "--json", "--strict", cwd=tmp_path / "ws")
    assert result.code == 0
    assert result.json()["privileges"] == [] and result.json()["privileges_checked"] is False


# ------------------------------------------------------------------ SHOW GRANTS lines


def test_mysql_grant_lines_are_parsed() -> None:
    lines = [
        "GRANT `reporting` TO `etl`@`%`",
        "GRANT PROCESS, FILE ON *.* TO `etl`@`%` IDENTIFIED BY PASSWORD '*D821809F' WITH GRANT OPTION",
        "GRANT SELECT ON `shop\\_db`.* TO `etl`@`%`",
        "GRANT SELECT (`Host`, `User`), INSERT ON `mysql`.`user` TO `etl`@`%`",
        "GRANT DELETE ON `shop\\_db`.* TO `reporting`",
        "GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION",
    ]
    grants = [g for g in (Grant.parse(line) for line in lines) if g]
    assert [(g.privileges, g.shown, g.grant_option) for g in grants] == [
        (("PROCESS", "FILE"), "*.*", True),
        (("SELECT",), "shop_db.*", False),
        (("SELECT", "INSERT"), "mysql.user", False),
        (("DELETE",), "shop_db.*", False),
        (("PROXY",), "''@'%'", True),
    ]
    findings = mysql_findings("etl@%", grants, writable=False)
    assert codes(findings) == {
        "server_files": "danger",
        "process": "warn",
        "grant_option": "warn",
        "write_grant": "warn",
    }
    write = next(f for f in findings if f.code == "write_grant")
    # The REVOKE names the object and grantee exactly as granted (escaped wildcard, the role).
    assert "REVOKE INSERT ON `mysql`.`user` FROM `etl`@`%`" in write.fix
    assert "REVOKE DELETE ON `shop\\_db`.* FROM `reporting`" in write.fix
    assert "password" not in " ".join(f.message + f.fix for f in findings).lower()
