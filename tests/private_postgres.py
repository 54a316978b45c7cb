"""A private PostgreSQL server for one test, which the test may stop, start and restart at will.

Fault tests that take a database server down must never touch the machine's shared server on
port 5432: other tests (and other sessions) use it at the same time. This starts a throwaway
cluster (`initdb` into a temp folder, a free port on 127.0.0.1, trust auth, fsync off) with one
database `qf`, and removes it afterwards. Missing server binaries fail the test; nothing is skipped.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

BIN_GLOB = "/usr/lib/postgresql/*/bin"


def server_bin() -> Path:
    """The bin folder of the newest PostgreSQL server installed (it holds initdb and pg_ctl)."""
    found = [
        Path(d)
        for d in glob.glob(BIN_GLOB)
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file()
    ]
    if not found:
        pytest.fail(
            f"No PostgreSQL server binaries (initdb, pg_ctl) under {BIN_GLOB}: these tests start a "
            "private server. Install them with: apt-get install postgresql",
            pytrace=False,
        )

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)

    return max(found, key=version)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostgres:
    bin: Path
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/qf"

    def _run(self, *args: str, timeout: float = 60) -> None:
        """Run a server binary as the `postgres` OS user (initdb and postgres refuse to run as root)."""
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*as_user, str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}\nserver log:\n{tail}"
            )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private server with an empty database `qf`; stopped and deleted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="qf-private-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PrivatePostgres(server_bin(), folder, free_port())
    try:
        server._run("initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(server.data))
        server.start()
        with psycopg.connect(
            host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            admin.execute("CREATE DATABASE qf")
        yield server
    finally:
        if server.running():
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
