"""One SQLite file in WAL mode: connections per thread, explicit read and write transactions.

Writers take the write lock up front (`BEGIN IMMEDIATE`), so two writers never deadlock on a
lock upgrade; a writer that finds the lock held waits on SQLite's busy handler for up to
`busy_timeout_s`, and only then fails with StoreError. Readers use WAL snapshots and never
wait on writers. `synchronous=NORMAL` keeps every committed transaction across a process
crash (SIGKILL); only a power loss can drop the last few.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from personavlm.errors import StoreError
from personavlm.memory import schema

__all__ = ["Database"]


class Database:
    def __init__(self, path: Path, *, busy_timeout_s: float = 60.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for {path}: {exc}") from exc
        with self.write() as conn:
            schema.migrate(conn, location=str(path))

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open {self.path} as a SQLite database: {exc}") from exc
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite does not run the busy
        # handler for it: processes creating one store together must retry here themselves.
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: commits on success, rolls back everything on any exception.

        SQLite errors escaping the body become StoreError; callers that expect a specific
        constraint failure catch sqlite3.IntegrityError inside the body first.
        """
        conn = self.connection()
        with _mapped_errors(self.path, self.busy_timeout_s):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same snapshot."""
        conn = self.connection()
        with _mapped_errors(self.path, self.busy_timeout_s):
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


@contextmanager
def _mapped_errors(path: Path, timeout_s: float) -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"{path} stayed locked by another writer for {timeout_s:.0f} s; "
                "retry, or raise busy_timeout_s"
            ) from exc
        raise StoreError(f"SQLite error on {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"SQLite error on {path}: {exc}") from exc
