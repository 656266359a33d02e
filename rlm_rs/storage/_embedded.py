"""Embedded backend: SQLite (WAL) items + a local blob directory, one data dir.

Durable across restarts and safe with several processes on one machine
(control plane, ingestion worker, CLI): every write is one SQLite transaction
(`BEGIN IMMEDIATE`; WAL with synchronous=NORMAL: a killed process loses no
committed transaction, a power cut may lose the last few but never corrupts —
FULL cost ~8 ms per turn in fsyncs under load), every blob is written to a
temporary file, fsynced and linked into place, so a killed writer leaves
either the whole record or nothing. Never hold a connection across a fork.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlm_rs.errors import RlmError
from rlm_rs.storage.interfaces import (
    TABLES,
    BlobInfo,
    Condition,
    Item,
    Put,
    Update,
    Write,
    conflict,
    validate_key,
    validate_prefix,
)

_BUSY_TIMEOUT_MS = 30_000
# The listing index's keys, read from the item's body (an expression index).
_GSI3PK = "json_extract(body, '$.GSI3PK')"
_GSI3SK = "json_extract(body, '$.GSI3SK')"
_Files = list[tuple[str, Path]]  # (key, path); `list` is a method name in LocalBlobStore


class SqliteItemStore:
    def __init__(self, path: Path, table_prefix: str = "rlm_") -> None:
        self.path = path
        self.prefix = table_prefix
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            # one connection per thread: keep each page cache small (1 MiB)
            # so a 40-thread server's caches stay bounded and modest
            conn.execute("PRAGMA cache_size=-1024")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _table(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return f'"{self.prefix}{table}"'

    def create_tables(self) -> None:
        conn = self._conn()
        for table in TABLES:
            name = self._table(table)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (pk TEXT NOT NULL, sk TEXT NOT NULL, "
                "gsi1pk TEXT, gsi2pk TEXT, body TEXT NOT NULL, PRIMARY KEY (pk, sk))"
            )
            for column in ("gsi1pk", "gsi2pk"):
                index = f'"{self.prefix}{table}_{column}"'
                conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {name} ({column})")
            # The listing index (GSI3) on the body's own attributes: no column
            # to fill, so put and update need not know it.
            index = f'"{self.prefix}{table}_gsi3"'
            conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {name} ({_GSI3PK}, {_GSI3SK})")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _write(self) -> _Transaction:
        return _Transaction(self._conn())

    @staticmethod
    def _load(body: str) -> Item:
        item: Item = json.loads(body)
        return item

    def put(self, table: str, item: Item, *, if_absent: bool = False) -> Item:
        stored = {**item, "version": 1}
        body = json.dumps(stored, sort_keys=True)
        with self._write() as conn:
            if if_absent:
                row = conn.execute(
                    f"SELECT 1 FROM {self._table(table)} WHERE pk=? AND sk=?",
                    (item["PK"], item["SK"]),
                ).fetchone()
                if row:
                    raise conflict("item already exists")
            conn.execute(
                f"INSERT OR REPLACE INTO {self._table(table)} (pk, sk, gsi1pk, gsi2pk, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (item["PK"], item["SK"], item.get("GSI1PK"), item.get("GSI2PK"), body),
            )
        return stored

    def get(self, table: str, pk: str, sk: str) -> Item | None:
        row = (
            self._conn()
            .execute(f"SELECT body FROM {self._table(table)} WHERE pk=? AND sk=?", (pk, sk))
            .fetchone()
        )
        return self._load(row[0]) if row else None

    def query(self, table: str, pk: str, sk_prefix: str = "") -> list[Item]:
        rows = (
            self._conn()
            .execute(
                f"SELECT body FROM {self._table(table)} WHERE pk=? AND substr(sk, 1, ?)=? ORDER BY sk",
                (pk, len(sk_prefix), sk_prefix),
            )
            .fetchall()
        )
        return [self._load(r[0]) for r in rows]

    def query_index(self, table: str, value: str, index: str = "GSI1") -> list[Item]:
        column = {"GSI1": "gsi1pk", "GSI2": "gsi2pk"}[index]
        rows = (
            self._conn()
            .execute(f"SELECT body FROM {self._table(table)} WHERE {column}=? ORDER BY sk", (value,))
            .fetchall()
        )
        return [self._load(r[0]) for r in rows]

    def update(
        self, table: str, pk: str, sk: str, changes: Item, *, condition: Condition | None = None
    ) -> Item:
        name = self._table(table)
        with self._write() as conn:
            row = conn.execute(f"SELECT body FROM {name} WHERE pk=? AND sk=?", (pk, sk)).fetchone()
            current = self._load(row[0]) if row else None
            if current is None or not (condition or Condition()).holds(current):
                raise conflict("conditional update failed")
            updated = {**current, **changes, "version": int(current.get("version", 0)) + 1}
            conn.execute(
                f"UPDATE {name} SET body=?, gsi1pk=?, gsi2pk=? WHERE pk=? AND sk=?",
                (
                    json.dumps(updated, sort_keys=True),
                    updated.get("GSI1PK"),
                    updated.get("GSI2PK"),
                    pk,
                    sk,
                ),
            )
        return updated

    def delete(self, table: str, pk: str, sk: str) -> None:
        with self._write() as conn:
            conn.execute(f"DELETE FROM {self._table(table)} WHERE pk=? AND sk=?", (pk, sk))

    def query_newest(self, table: str, value: str, *, before: str = "", limit: int) -> list[Item]:
        """GSI3 newest first, through the expression index (one range scan)."""
        bound = f"AND {_GSI3SK} < ? " if before else ""
        params: tuple[Any, ...] = (value, before, limit) if before else (value, limit)
        rows = (
            self._conn()
            .execute(
                f"SELECT body FROM {self._table(table)} WHERE {_GSI3PK} = ? {bound}"
                f"ORDER BY {_GSI3SK} DESC LIMIT ?",
                params,
            )
            .fetchall()
        )
        return [self._load(r[0]) for r in rows]

    def transact(self, writes: list[Write]) -> None:
        """Every condition checked, then every write, in one SQLite transaction."""
        with self._write() as conn:
            planned: list[tuple[str, Item]] = []
            for write in writes:
                select = f"SELECT body FROM {self._table(write.table)} WHERE pk=? AND sk=?"
                if isinstance(write, Put):
                    if (
                        write.if_absent
                        and conn.execute(select, (write.item["PK"], write.item["SK"])).fetchone()
                    ):
                        raise conflict("conditional write failed")
                    planned.append((write.table, {**write.item, "version": 1}))
                    continue
                row = conn.execute(select, (write.pk, write.sk)).fetchone()
                current = self._load(row[0]) if row else None
                if current is None or not write.condition.holds(current):
                    raise conflict("conditional write failed")
                if isinstance(write, Update):
                    version = int(current.get("version", 0)) + 1
                    planned.append((write.table, {**current, **write.changes, "version": version}))
            for table, item in planned:
                conn.execute(
                    f"INSERT OR REPLACE INTO {self._table(table)} (pk, sk, gsi1pk, gsi2pk, body) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (item["PK"], item["SK"], item.get("GSI1PK"), item.get("GSI2PK"), _body(item)),
                )


def _body(item: Item) -> str:
    return json.dumps(item, sort_keys=True)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one serialised write."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


class LocalBlobStore:
    """Objects as files under root/<bucket>/<key>, written atomically."""

    def __init__(self, root: Path, bucket: str) -> None:
        self.bucket = bucket
        self.root = root / bucket

    def create_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put(self, key: str, data: bytes, content_type: str = "") -> BlobInfo:
        path = self._path(key)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        existing = self.head(key)
        if existing is not None:
            if existing.etag == etag and existing.size == len(data):
                return existing  # same bytes: idempotent
            raise conflict("object keys are immutable")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)  # fails if another writer won the race
        except FileExistsError:
            if self.get(key) != data:
                raise conflict("object keys are immutable") from None
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)
        return BlobInfo(key=key, size=len(data), etag=etag)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "") -> BlobInfo:
        """Chunks into a temporary file beside the key (hashed as they come),
        fsynced and linked into place only when the iterator is exhausted;
        any failure unlinks the temporary file. A key that exists is a
        CONFLICT (streamed keys are new: an upload id is random)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)
        except FileExistsError:
            raise conflict("object keys are immutable") from None
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)
        return BlobInfo(key=key, size=size, etag=digest.hexdigest())

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise RlmError("S3_READ_ERROR", "no such object") from None

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object."""
        try:
            with self._path(key).open("rb") as handle:
                handle.seek(start)
                return handle.read(max(end - start, 0))
        except FileNotFoundError:
            raise RlmError("S3_READ_ERROR", "no such object") from None

    def head(self, key: str) -> BlobInfo | None:
        """None when there is no such object, also when it is deleted while
        being read (a sweep racing a reader): size and digest from one open file."""
        path = self._path(key)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return BlobInfo(key=key, size=size, etag=digest.hexdigest())

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix`, sorted; walks only the prefix's folder."""
        return iter(sorted(k for k, _ in self._files(prefix)))

    def _files(self, prefix: str) -> _Files:
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if ".." in prefix.split("/") or not folder.is_dir():
            return []
        out: _Files = []
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = str(path.relative_to(self.root))
                if key.startswith(prefix):
                    out.append((key, path))
        return out

    def delete_prefix(self, prefix: str) -> int:
        """Unlink every object below the folder `prefix`, then the folders
        left empty (the files are gone from disk when this returns)."""
        validate_prefix(prefix)
        folder = self.root / prefix
        if not folder.is_dir():
            return 0
        deleted = 0
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                path.rmdir()  # emptied by the deeper paths before it
            else:
                path.unlink(missing_ok=True)  # a killed writer's .tmp- file goes too
                deleted += 0 if path.name.startswith(".tmp-") else 1
        folder.rmdir()
        parent = folder.parent
        while parent != self.root:  # drop folders the deletion left empty
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return deleted

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
