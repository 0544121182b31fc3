"""Durable queues, the storage: one sqlite database per node (stdlib ``sqlite3``, WAL),
written by one thread with group commit.

Every write is queued with a future; the writer thread takes everything queued, runs it
in one transaction and resolves the futures after COMMIT (an fsync with
``synchronous=FULL``). Reads happen once, at open: the runtime keeps what it needs in
memory and only writes afterwards. Tables: ``meta`` (the store id), ``outbox`` (jobs this
node sent), ``inbox`` (jobs this node runs), ``dead`` (dead letters), ``seen`` (ids and
keys done or dead, the idempotency window).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .._core.jobs import Job
from .._errors import ConfigError, MeshError
from .._wire.codec import default_types

__all__ = ["JobStore", "Loaded", "Op"]

log = logging.getLogger("mesh.jobs")

SCHEMA = 1
#: One statement and its parameters.
Op = tuple[str, Sequence[Any]]

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, job BLOB NOT NULL, provider_store TEXT, provider_node TEXT);
CREATE TABLE IF NOT EXISTS inbox (
    id TEXT PRIMARY KEY, job BLOB NOT NULL, attempt INTEGER NOT NULL,
    not_before REAL NOT NULL, error TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS dead (
    id TEXT PRIMARY KEY, job BLOB NOT NULL, attempt INTEGER NOT NULL,
    error TEXT NOT NULL, died REAL NOT NULL);
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY, key TEXT, state TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_at ON seen (at);
"""


def pack_job(job: Job) -> bytes:
    data: bytes = msgpack.packb(job.to_wire(), use_bin_type=True, default=default_types.pack)
    return data


def unpack_job(blob: bytes) -> Job:
    wire = msgpack.unpackb(blob, raw=False, ext_hook=default_types.unpack, strict_map_key=False)
    return Job.from_wire(wire)


@dataclass
class Loaded:
    """What the database held at open."""

    store_id: str
    #: (job, provider store, provider node) per outbox row.
    outbox: list[tuple[Job, str | None, str | None]]
    inbox: list[Job]
    dead: list[Job]
    #: (id, key, state, at) oldest first.
    seen: list[tuple[str, str | None, str, float]]


class JobStore:
    """The database of one node's jobs; ``write`` from the event loop, committed by the
    writer thread. ``path`` ``":memory:"`` keeps nothing after the process (tests)."""

    def __init__(self, path: Path | str, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[
            tuple[list[Op], asyncio.Future[None], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: Transactions committed and writes in them (group commit: writes >= commits).
        self.commits = 0
        self.writes = 0

    def open(self) -> Loaded:
        """Open (or create) the database and read it; :class:`ConfigError` naming the
        path when it is not a database, is corrupt, or is locked by another process."""
        where = f"jobs_db {self.path}"
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=0.5, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"{where}: cannot open the job database: {exc}") from None
        try:
            # One process per database: the first write takes a lock held until close,
            # so a second node on the same file fails here, at start, not later.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if self.path != ":memory:" and str(mode).lower() != "wal":
                raise ConfigError(f"{where}: the database cannot use WAL (journal_mode {mode})")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("BEGIN IMMEDIATE")
            for statement in _TABLES.split(";"):
                if statement.strip():
                    db.execute(statement)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise ConfigError(f"{where}: the job database is corrupt ({check})")
            row = db.execute("SELECT v FROM meta WHERE k = 'store_id'").fetchone()
            if row is None:
                store_id = secrets.token_hex(8)
                db.execute("INSERT INTO meta VALUES ('store_id', ?)", (store_id,))
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            else:
                store_id = row[0]
            db.execute("COMMIT")
            loaded = Loaded(
                store_id,
                [
                    (unpack_job(blob), ps, pn)
                    for blob, ps, pn in db.execute(
                        "SELECT job, provider_store, provider_node FROM outbox ORDER BY rowid"
                    )
                ],
                [
                    _with(unpack_job(blob), attempt, nb, err)
                    for blob, attempt, nb, err in db.execute(
                        "SELECT job, attempt, not_before, error FROM inbox ORDER BY rowid"
                    )
                ],
                [
                    _with(unpack_job(blob), attempt, died, err)
                    for blob, attempt, died, err in db.execute(
                        "SELECT job, attempt, died, error FROM dead ORDER BY rowid"
                    )
                ],
                list(db.execute("SELECT id, key, state, at FROM seen ORDER BY at")),
            )
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise ConfigError(
                    f"{where}: the job database is locked (another node uses it?): {exc}"
                ) from None
            raise ConfigError(f"{where}: cannot use the job database: {exc}") from None
        except (sqlite3.DatabaseError, MeshError, ValueError) as exc:
            db.close()
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(
                f"{where}: not a job database or corrupt ({exc}); move it away to start afresh"
            ) from None
        self._db = db
        self._thread = threading.Thread(target=self._write_loop, name="mesh jobs writer")
        self._thread.daemon = True
        self._thread.start()
        return loaded

    async def write(self, ops: list[Op]) -> None:
        """Run ``ops`` in a transaction (grouped with others queued meanwhile); returns
        once committed. Raises :class:`MeshError` if the database refused them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((ops, future, loop))
        await asyncio.shield(future)

    def _write_loop(self) -> None:
        db = self._db
        assert db is not None
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(db, batch)
            if stop:
                break
        db.close()

    def _commit(
        self,
        db: sqlite3.Connection,
        batch: list[tuple[list[Op], asyncio.Future[None], asyncio.AbstractEventLoop]],
    ) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
            for ops, _, _ in batch:
                for sql, params in ops:
                    db.execute(sql, params)
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if len(batch) > 1:  # one bad write must not fail the others: one by one
                for item in batch:
                    self._commit(db, [item])
                return
            _, future, loop = batch[0]
            error = MeshError(f"job database {self.path}: write failed")
            log.exception("job database %s: write failed", self.path)
            loop.call_soon_threadsafe(_settle, future, error)
            return
        self.commits += 1
        for _, future, loop in batch:
            self.writes += 1
            loop.call_soon_threadsafe(_settle, future, None)

    async def aclose(self) -> None:
        """Commit what is queued, stop the writer thread, close the database."""
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._db = None


def _with(job: Job, attempt: int, at: float, error: str) -> Job:
    job.attempt = attempt
    job.not_before = at
    job.error = error
    return job


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


# -- statements ------------------------------------------------------------------------------


def put_outbox(job: Job, store: str | None = None, node: str | None = None) -> Op:
    return (
        "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)",
        (job.id, pack_job(job), store, node),
    )


def hand_outbox(job_id: str, store: str | None, node: str | None) -> Op:
    return (
        "UPDATE outbox SET provider_store = ?, provider_node = ? WHERE id = ?",
        (store, node, job_id),
    )


def delete(table: str, job_id: str) -> Op:
    assert table in ("outbox", "inbox", "dead")
    return (f"DELETE FROM {table} WHERE id = ?", (job_id,))


def put_inbox(job: Job) -> Op:
    return (
        "INSERT OR REPLACE INTO inbox VALUES (?, ?, ?, ?, ?)",
        (job.id, pack_job(job), job.attempt, job.not_before, job.error),
    )


def put_dead(job: Job, died: float) -> Op:
    return (
        "INSERT OR REPLACE INTO dead VALUES (?, ?, ?, ?, ?)",
        (job.id, pack_job(job), job.attempt, job.error, died),
    )


def put_seen(job_id: str, key: str | None, state: str, at: float) -> Op:
    return ("INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?)", (job_id, key, state, at))


def forget_seen(ids: list[str]) -> Op:
    return (f"DELETE FROM seen WHERE id IN ({','.join('?' * len(ids))})", ids)
