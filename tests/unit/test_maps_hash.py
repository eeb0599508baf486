"""Indexed hash:/btree:/lmdb: tables: building, reading, format (postclient.maps.hash)."""

import logging
import os
import sqlite3
import time

import pytest

from postclient.config.errors import ConfigError
from postclient.maps import open_table
from postclient.maps.hash import APPLICATION_ID, FORMAT_VERSION, build, update


def source(tmp_path, text, name="map"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_build_then_lookup_folded(tmp_path):
    path = source(tmp_path, "# c\nUser@Example.COM  one\n  two\n@example.com catch\n")
    assert build("hash", path) == 2
    table = open_table(f"hash:{path}")
    assert table.lookup("user@example.com") == "one  two"
    assert table.lookup("USER@example.com") == "one  two"
    assert table.lookup("@EXAMPLE.COM") == "catch"
    assert table.lookup("missing") is None
    assert (table.kind, table.fixed_keys) == ("hash", True)
    assert table.items() == [("@example.com", "catch"), ("user@example.com", "one  two")]


def test_lookup_uses_only_the_index(tmp_path):
    path = source(tmp_path, "a 1\n")
    build("hash", path)
    os.unlink(path)
    assert open_table(f"hash:{path}").lookup("a") == "1"


def test_btree_and_lmdb_aliases(tmp_path):
    path = source(tmp_path, "a 1\n")
    build("btree", path)
    assert os.path.exists(path + ".db")
    assert open_table(f"btree:{path}").lookup("A") == "1"
    build("lmdb", path)
    assert os.path.exists(path + ".lmdb")
    assert open_table(f"lmdb:{path}").kind == "lmdb"


def test_duplicates_warn_first_wins_or_replace(tmp_path, caplog):
    path = source(tmp_path, "a first\nb x\nA second\n")
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        build("hash", path)
    assert open_table(f"hash:{path}").lookup("a") == "first"
    assert f'{path}:3: duplicate entry: "a"' in caplog.text
    build("hash", path, duplicates="replace")
    assert open_table(f"hash:{path}").lookup("a") == "second"


def test_eight_bit_keys_and_values(tmp_path):
    path = tmp_path / "map"
    path.write_bytes(b"k\xe9y v\xff\nCAF\xc3\x89 utf8\n")
    build("hash", str(path))
    table = open_table(f"hash:{path}")
    assert table.lookup("k\udce9y") == "v\udcff"
    assert table.lookup("caf\u00e9") == "utf8"


def test_missing_index_names_the_file(tmp_path):
    path = source(tmp_path, "a 1\n")
    with pytest.raises(ConfigError) as info:
        open_table(f"hash:{path}")
    message = str(info.value)
    assert message.startswith(f"{path}.db: cannot open hash table")
    assert f'postclient map hash:{path}' in message


def test_foreign_file_is_reported_not_misread(tmp_path):
    path = source(tmp_path, "a 1\n")
    with open(path + ".db", "wb") as handle:
        handle.write(b"\x00\x06\x15\x61" + b"\x00" * 4092)   # Berkeley DB hash magic
    with pytest.raises(ConfigError) as info:
        open_table(f"hash:{path}")
    assert str(info.value).startswith(f"{path}.db: not a postclient indexed table")
    other = sqlite3.connect(path + ".db2")
    other.execute("CREATE TABLE x (y)")
    other.commit()
    other.close()
    os.replace(path + ".db2", path + ".db")
    with pytest.raises(ConfigError):
        open_table(f"hash:{path}")


def test_source_syntax_error_writes_nothing(tmp_path):
    path = source(tmp_path, "good 1\nbroken\n")
    with pytest.raises(ConfigError) as info:
        build("hash", path)
    assert str(info.value).startswith(f"{path}:2: expected format")
    assert not os.path.exists(path + ".db")
    assert os.listdir(tmp_path) == ["map"]


def test_schema_is_as_documented(tmp_path):
    path = source(tmp_path, "Key value\n")
    build("hash", path)
    conn = sqlite3.connect(path + ".db")
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
    assert conn.execute("SELECT key, value FROM entries").fetchall() == [(b"key", b"value")]
    meta = dict(conn.execute("SELECT name, value FROM meta"))
    assert meta["kind"] == "hash" and meta["entries"] == "1"
    assert meta["source"] == os.path.abspath(path)
    conn.close()


def test_rebuild_replaces_index_atomically(tmp_path):
    path = source(tmp_path, "a old\n")
    build("hash", path)
    reader = open_table(f"hash:{path}")
    inode = os.stat(path + ".db").st_ino
    source(tmp_path, "a new\nb added\n")
    build("hash", path)
    assert os.stat(path + ".db").st_ino != inode          # renamed into place
    assert sorted(os.listdir(tmp_path)) == ["map", "map.db"]   # no temporary left over
    assert reader.lookup("a") == "old"                     # open reader keeps its snapshot
    assert reader.changed()
    fresh = open_table(f"hash:{path}")
    assert (fresh.lookup("a"), fresh.lookup("b")) == ("new", "added")
    assert not fresh.changed()


def test_index_permissions_follow_source(tmp_path):
    path = source(tmp_path, "a 1\n")
    os.chmod(path, 0o640)
    build("hash", path)
    assert os.stat(path + ".db").st_mode & 0o777 == 0o640
    os.chmod(path, 0o600)
    build("hash", path)
    assert os.stat(path + ".db").st_mode & 0o777 == 0o600


def test_older_index_warns(tmp_path, caplog):
    path = source(tmp_path, "a 1\n")
    build("hash", path)
    old = time.time() - 100
    os.utime(path + ".db", (old, old))
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        open_table(f"hash:{path}")
    assert f"database {path}.db is older than source file {path}" in caplog.text
    caplog.clear()
    build("hash", path)
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        open_table(f"hash:{path}")
    assert "older than source" not in caplog.text


def test_incremental_update(tmp_path, caplog):
    path = str(tmp_path / "map")
    update("hash", path, [(1, "A", "1"), (2, "b", "2")])
    table = open_table(f"hash:{path}")
    assert (table.lookup("a"), table.lookup("B")) == ("1", "2")
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        update("hash", path, [(1, "a", "other"), (2, "c", "3")])
    assert table.lookup("a") == "1" and table.lookup("c") == "3"
    assert 'stdin:1: duplicate entry: "a"' in caplog.text
    update("hash", path, [(1, "a", "replaced")], duplicates="replace")
    assert table.lookup("a") == "replaced"


def test_incremental_update_is_all_or_nothing(tmp_path):
    path = str(tmp_path / "map")
    update("hash", path, [(1, "a", "1")])

    def entries():
        yield 1, "b", "2"
        raise ConfigError("stdin", 2, "expected format: key whitespace value")

    with pytest.raises(ConfigError):
        update("hash", path, entries())
    assert open_table(f"hash:{path}").lookup("b") is None


def test_lookup_after_fork_reopens(tmp_path):
    path = source(tmp_path, "a 1\n")
    build("hash", path)
    table = open_table(f"hash:{path}")
    assert table.lookup("a") == "1"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: must not reuse the parent's SQLite connection
        try:
            os.write(write_end, (table.lookup("a") or "none").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    assert os.read(read_end, 10) == b"1"
    os.close(read_end)
    assert table.lookup("a") == "1"
