"""``postclient map``: build indexed tables and query any table, like postmap(1).

Exports:
    main(argv) -> exit status     ``argv`` is everything after ``map``

Usage:
    postclient map [-r | -w] [type:]FILE ...     build FILE.db from FILE
    postclient map -i [-r | -w] [type:]FILE      add "key value" lines from stdin
    postclient map -q KEY type:name ...          print the first value found
    postclient map -q - type:name ...            keys from stdin; "key<TAB>value"
    postclient map -s type:name                  list an exact-match table

A FILE without a type means ``hash:FILE`` (Postfix's default_database_type).
Only the indexed types (hash, btree, lmdb) are built; the other types are
read as they are, so building them is a usage error.  ``-q`` opens any type.
Keys are case-folded for exact-match tables, as the tables do.  ``-r``
replaces duplicate keys (last wins), ``-w`` keeps the first silently; by
default the first wins and each duplicate is warned about.  ``-c DIR`` is
accepted for compatibility and ignored: tables do not depend on main.cf.

Exit status (sysexits): 0 success (for -q: found), 1 not found, 64 usage
error, 73 the index cannot be written, 75 a lookup failed (I/O), 78 a table
cannot be opened or has a syntax error (the message names file and line).
Warnings go to standard error as ``postclient map: warning: ...`` unless
logging is already configured.

Reads no configuration parameters.
"""

import contextlib
import getopt
import logging
import sys

from postclient.config.errors import ConfigError

from .hash import INDEXED_KINDS, build, database_path, update
from .registry import TABLE_TYPES, open_table
from .source import parse_entry, text_lines
from .table import TableError, logger

PROG = "postclient map"
USAGE = (f"usage: {PROG} [-irsw] [-c config_dir] [-q key] [type:]file ...")
EX_OK, EX_NOTFOUND, EX_USAGE = 0, 1, 64
EX_CANTCREAT, EX_TEMPFAIL, EX_CONFIG = 73, 75, 78


class _UsageError(Exception):
    pass


class _Formatter(logging.Formatter):
    def format(self, record):
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


@contextlib.contextmanager
def _warnings_to_stderr():
    """Show table warnings on stderr unless the application configured logging."""
    if logger.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _write(text):
    """Write to stdout, keeping 8-bit bytes (surrogateescape) intact."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    buffer.write(text.encode("utf-8", "surrogateescape"))
    buffer.flush()


def _stdin_lines():
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        for line in sys.stdin:
            yield line
    else:
        for line in buffer:
            yield line.decode("utf-8", "surrogateescape")


def _spec(arg):
    return arg if ":" in arg else "hash:" + arg


def _indexed(spec, option):
    kind, _, path = spec.partition(":")
    if kind == "proxy":
        raise _UsageError(f"{spec}: can't {option} tables through the proxy service")
    if kind not in INDEXED_KINDS:
        if kind in TABLE_TYPES:
            raise _UsageError(f"{spec}: {kind} tables are read as they are; only"
                              f" {', '.join(INDEXED_KINDS)} tables are built"
                              f" (test a table with -q)")
        raise ConfigError(spec, 0, f"unsupported lookup table type \"{kind}\""
                          f" (expected one of: {', '.join(TABLE_TYPES)})")
    if not path:
        raise _UsageError(f"{spec}: missing file name")
    return kind, path


def _build(specs, duplicates):
    targets = [_indexed(spec, "build") for spec in specs]
    for kind, path in targets:
        try:
            build(kind, path, duplicates)
        except OSError as exc:
            print(f"{PROG}: cannot write {database_path(kind, path)}:"
                  f" {exc.strerror or exc}", file=sys.stderr)
            return EX_CANTCREAT
    return EX_OK


def _incremental(specs, duplicates):
    if len(specs) != 1:
        raise _UsageError("-i updates exactly one table")
    kind, path = _indexed(specs[0], "update")

    def entries():
        for number, line in text_lines(_stdin_lines(), "stdin"):
            try:
                key, value = parse_entry(line)
            except ValueError as exc:
                raise ConfigError("stdin", number, str(exc)) from None
            yield number, key, value

    try:
        update(kind, path, entries(), "stdin", duplicates)
    except OSError as exc:
        print(f"{PROG}: cannot update {database_path(kind, path)}: {exc.strerror or exc}",
              file=sys.stderr)
        return EX_CANTCREAT
    return EX_OK


def _warn_empty(table, key):
    logger.warning("table %s: key %s: empty string result is not allowed", table.spec, key)


def _query(specs, key):
    for spec in specs:
        table = open_table(spec)
        try:
            value = table.lookup(key)
        finally:
            table.close()
        if value is not None:
            if value == "":
                _warn_empty(table, key)
            _write(value + "\n")
            return EX_OK
    return EX_NOTFOUND


def _query_stdin(specs):
    tables = [None] * len(specs)   # opened on first use, as postmap does
    found = False
    output = []
    try:
        for line in _stdin_lines():
            key = line[:-1] if line.endswith("\n") else line
            for index, spec in enumerate(specs):
                if tables[index] is None:
                    tables[index] = open_table(spec)
                value = tables[index].lookup(key)
                if value is not None:
                    if value == "":
                        _warn_empty(tables[index], key)
                    output.append(f"{key}\t{value}\n")
                    found = True
                    break
            if len(output) >= 256:
                _write("".join(output))
                output = []
    finally:
        if output:
            _write("".join(output))
        for table in tables:
            if table is not None:
                table.close()
    return EX_OK if found else EX_NOTFOUND


def _sequence(specs):
    table = open_table(specs[0])
    try:
        try:
            items = table.items()
        except NotImplementedError as exc:
            raise _UsageError(f"{specs[0]}: {exc}") from None
    finally:
        table.close()
    _write("".join(f"{key}\t{value}\n" for key, value in items))
    return EX_OK


def _run(argv):
    try:
        options, args = getopt.gnu_getopt(argv, "c:iq:rsw")
    except getopt.GetoptError as exc:
        raise _UsageError(str(exc)) from None
    query = None
    incremental = sequence = False
    duplicates = "warn"
    for option, value in options:
        if option == "-i":
            incremental = True
        elif option == "-q":
            if query is not None or sequence:
                raise _UsageError("specify only one of -s or -q")
            query = value
        elif option == "-s":
            if query is not None:
                raise _UsageError("specify only one of -s or -q")
            sequence = True
        elif option == "-r":
            duplicates = "replace"
        elif option == "-w":
            duplicates = "ignore"
        # -c DIR: accepted and ignored (see the module docstring).
    if not args:
        raise _UsageError("missing table name")
    if incremental and (query is not None or sequence):
        raise _UsageError("-i cannot be combined with -q or -s")
    specs = [_spec(arg) for arg in args]
    if query == "-":
        return _query_stdin(specs)
    if query is not None:
        return _query(specs, query)
    if sequence:
        return _sequence(specs)
    if incremental:
        return _incremental(specs, duplicates)
    return _build(specs, duplicates)


def main(argv):
    """Run ``postclient map`` with ``argv`` (the arguments after ``map``)."""
    with _warnings_to_stderr():
        try:
            return _run(list(argv))
        except _UsageError as exc:
            print(f"{PROG}: {exc}\n{USAGE}", file=sys.stderr)
            return EX_USAGE
        except ConfigError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EX_CONFIG
        except TableError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EX_TEMPFAIL


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
