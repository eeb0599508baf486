"""``hash:FILE`` (and ``btree:``, ``lmdb:``): indexed tables built by ``postclient map``.

Exports:
    HashTable        the table; reads only ``FILE.db``, never the source
    INDEXED_KINDS    {"hash": ".db", "btree": ".db", "lmdb": ".lmdb"}
    database_path    where the index of ``kind:FILE`` lives
    build            source file -> index, atomically (``postclient map``)
    update           add entries to an index in place (``postclient map -i``)

Semantics are Postfix's hash: ``postclient map hash:FILE`` reads FILE in the
postmap source format (see ``source.py``), case-folds the keys, keeps the
first of duplicate keys with a warning, and writes ``FILE.db``.  Lookups
fold the key the same way and use only ``FILE.db``.  Opening logs a warning
when FILE is newer than FILE.db, as Postfix does.  ``btree:`` and ``lmdb:``
are the same table under Postfix's other names (``lmdb:`` keeps Postfix's
``.lmdb`` file name); a file written by Postfix itself (Berkeley DB, LMDB)
is recognised as foreign and reported, not misread.

This Python has no dbm module, so the index is an SQLite 3 database
(standard ``sqlite3`` module)::

    PRAGMA application_id = 0x50634d70      -- "PcMp": a postclient map
    PRAGMA user_version   = 1               -- format version
    CREATE TABLE entries (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- format, kind, source, built (UTC, ISO 8601), entries, keys

Keys are stored folded; keys and values are the UTF-8 bytes of the strings
(with ``surrogateescape``, so 8-bit bytes that are not UTF-8 survive).

A build writes a temporary file in the same directory, fsyncs it, renames it
over ``FILE.db`` and fsyncs the directory: readers see the old index or the
new one, never a partial one.  The new file gets the group/other read
permissions of the source file (postmap does the same).  A process that has
the old index open keeps reading it until it reopens; ``changed()`` tells it.

Reads no configuration parameters.
"""

import datetime
import os
import sqlite3
import tempfile
import urllib.parse

from postclient.config.errors import ConfigError

from .source import collect_entries, read_entries
from .table import FileState, Table, TableError, fold_key, logger

INDEXED_KINDS = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb"}
APPLICATION_ID = 0x50634D70
FORMAT_VERSION = 1
FOREIGN = ("not a postclient indexed table (perhaps built by Postfix's postmap);"
           " rebuild it with \"postclient map {kind}:{path}\"")


def _encode(text):
    return text.encode("utf-8", "surrogateescape")


def _decode(blob):
    return bytes(blob).decode("utf-8", "surrogateescape")


def database_path(kind, path):
    return path + INDEXED_KINDS[kind]


def _connect_readonly(db_path, timeout=5.0):
    uri = "file:" + urllib.parse.quote(os.fsencode(os.path.abspath(db_path))) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)


def _check_format(conn, db_path, kind, path):
    """Raise ConfigError unless ``conn`` is a postclient index we can read."""
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError:
        raise ConfigError(db_path, 0, FOREIGN.format(kind=kind, path=path)) from None
    if application_id != APPLICATION_ID:
        raise ConfigError(db_path, 0, FOREIGN.format(kind=kind, path=path))
    if version != FORMAT_VERSION:
        raise ConfigError(db_path, 0, f"unsupported index format version {version}"
                          f" (expected {FORMAT_VERSION}); rebuild it with"
                          f" \"postclient map {kind}:{path}\"")


class HashTable(Table):
    fixed_keys = True
    _QUERY = "SELECT value FROM entries WHERE key = ?"

    def __init__(self, spec, kind, path):
        super().__init__(spec)
        self.kind = kind
        self.path = path
        self.db_path = database_path(kind, path)
        self._conn = None
        self._open()
        self._warn_if_older_than_source()

    def _open(self):
        try:
            st = os.stat(self.db_path)
            conn = _connect_readonly(self.db_path)
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(self.db_path, 0, f"cannot open {self.kind} table: {reason}"
                              f" (build it with \"postclient map {self.kind}:{self.path}\")"
                              ) from None
        try:
            _check_format(conn, self.db_path, self.kind, self.path)
        except ConfigError:
            conn.close()
            raise
        self._conn = conn
        self._pid = os.getpid()
        self._state = FileState(self.db_path, st)

    def _warn_if_older_than_source(self):
        try:
            source_mtime = os.stat(self.path).st_mtime_ns
            index_mtime = os.stat(self.db_path).st_mtime_ns
        except OSError:
            return
        if source_mtime > index_mtime:
            logger.warning("database %s is older than source file %s", self.db_path, self.path)

    def _connection(self):
        # A connection must not cross fork(): the child opens its own.
        if self._pid != os.getpid():
            self._conn = None
            self._open()
        return self._conn

    def lookup(self, key):
        try:
            row = self._connection().execute(self._QUERY, (_encode(fold_key(key)),)).fetchone()
        except sqlite3.Error as exc:
            raise TableError(f"{self.spec}: lookup error: {exc}") from None
        return None if row is None else _decode(row[0])

    def items(self):
        try:
            rows = self._connection().execute("SELECT key, value FROM entries ORDER BY key")
            return [(_decode(key), _decode(value)) for key, value in rows]
        except sqlite3.Error as exc:
            raise TableError(f"{self.spec}: read error: {exc}") from None

    def changed(self):
        return self._state.changed()

    def close(self):
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None


def _source_mode(path):
    """postmap's rule: owner rw, plus the source's group/other read bits."""
    try:
        return 0o600 | (os.stat(path).st_mode & 0o044)
    except OSError:
        return 0o644


def _fsync_path(path, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_database(db_path, items, meta, mode):
    """Write a complete index to a temporary file, then rename it into place."""
    directory = os.path.dirname(os.path.abspath(db_path))
    fd, temp_path = tempfile.mkstemp(prefix="." + os.path.basename(db_path) + ".",
                                     suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        conn = sqlite3.connect(temp_path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
            conn.execute("BEGIN")
            conn.execute("CREATE TABLE entries (key BLOB PRIMARY KEY, value BLOB NOT NULL)"
                         " WITHOUT ROWID")
            conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            # Sorted input keeps B-tree inserts cheap for big tables.
            conn.executemany("INSERT INTO entries (key, value) VALUES (?, ?)",
                             sorted((_encode(key), _encode(value)) for key, value in items))
            conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", sorted(meta.items()))
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.chmod(temp_path, mode)
        _fsync_path(temp_path)
        os.replace(temp_path, db_path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except OSError:
            pass
        raise
    _fsync_path(directory, os.O_RDONLY | os.O_DIRECTORY)


def _meta(kind, path, count):
    return {
        "format": f"postclient-map {FORMAT_VERSION}",
        "kind": kind,
        "source": os.fsdecode(os.path.abspath(path)) if path else "",
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "entries": str(count),
        "keys": "casefold",
    }


def build(kind, path, duplicates="warn"):
    """Build ``FILE.db`` (per ``kind``) from the source file; return the entry count.

    Raises ConfigError for an unreadable or malformed source (nothing is
    written then) and OSError when the index cannot be written.
    """
    table = collect_entries(read_entries(path, kind), path, fold_key, duplicates)
    db_path = database_path(kind, path)
    _write_database(db_path, table.items(), _meta(kind, path, len(table)), _source_mode(path))
    return len(table)


def update(kind, path, entries, source="stdin", duplicates="warn"):
    """Add (line number, key, value) entries to ``FILE.db``, creating it if needed.

    The whole update is one SQLite transaction: readers see all of it or
    none of it.  Returns the number of entries stored.
    """
    db_path = database_path(kind, path)
    if not os.path.exists(db_path):
        _write_database(db_path, (), _meta(kind, path, 0), _source_mode(path))
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
    try:
        _check_format(conn, db_path, kind, path)
        if duplicates == "replace":
            insert = "INSERT OR REPLACE INTO entries (key, value) VALUES (?, ?)"
        else:
            insert = "INSERT OR IGNORE INTO entries (key, value) VALUES (?, ?)"
        stored = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for number, key, value in entries:
                key = fold_key(key)
                cursor = conn.execute(insert, (_encode(key), _encode(value)))
                if cursor.rowcount:
                    stored += 1
                elif duplicates == "warn":
                    logger.warning('%s:%d: duplicate entry: "%s"', source, number, key)
            conn.execute("UPDATE meta SET value = (SELECT count(*) FROM entries)"
                         " WHERE name = 'entries'")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return stored
