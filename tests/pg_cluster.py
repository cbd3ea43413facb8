"""A throw-away PostgreSQL 15 + pgvector cluster on 127.0.0.1 for the tests.

Started once per test session (in a temporary folder, on a free port, as the `postgres`
system user when the tests run as root: PostgreSQL refuses to run as root), stopped at the
end. Each test gets its own database, copied from a template that already has the vector
extension, so tests never see each other's rows. When PostgreSQL or pgvector is missing,
scripts/setup_postgres.sh installs them (root only); otherwise the tests fail saying how.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SETUP = Path(__file__).resolve().parent.parent / "scripts" / "setup_postgres.sh"
TEMPLATE = "personavlm_template"


def ensure_installed() -> None:
    if _installed():
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            "PostgreSQL 15 with pgvector is missing and the tests are not root: run "
            f"`sudo {SETUP}` once (it installs postgresql-15 and builds pgvector)"
        )
    done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not _installed():
        raise RuntimeError(f"{SETUP} failed:\n{done.stdout}\n{done.stderr}")


def _installed() -> bool:
    pg_config = PG_BIN / "pg_config"
    if not (PG_BIN / "initdb").exists() or not pg_config.exists():
        return False
    share = subprocess.run(
        [str(pg_config), "--sharedir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return (Path(share) / "extension" / "vector.control").exists()


class Cluster:
    def __init__(self, folder: Path, port: int, runner: list[str]) -> None:
        self.folder = folder
        self.port = port
        self._runner = runner
        self._names = itertools.count(1)

    @property
    def admin_url(self) -> str:
        return f"postgresql://personavlm@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://personavlm@127.0.0.1:{self.port}/{database}"

    def _pg(self, *args: str) -> None:
        subprocess.run([*self._runner, *args], check=True, capture_output=True, text=True)

    def start(self) -> None:
        data = self.folder / "data"
        self._pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "personavlm", "--auth=trust",
                 "-E", "UTF8", "--locale=C.UTF-8")  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options,
                 "-l", str(self.folder / "server.log"), "-w", "start")  # fmt: skip
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        with psycopg.connect(self.url(TEMPLATE), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")

    def stop(self) -> None:
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                 "-w", "stop")  # fmt: skip

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database (with pgvector) for one test; its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        try:
            yield self.url(name)
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    ensure_installed()
    folder = Path(tempfile.mkdtemp(prefix="personavlm-pg-"))
    runner: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL will not run as root: use its system user
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        runner = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(folder, _free_port(), runner)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
