"""The lookup-table base class and what every table type shares.

Exports:
    Table       base class: ``spec``, ``kind``, ``fixed_keys``, ``lookup(key)``,
                ``changed()``, ``close()``
    TableError  a table could not be consulted (I/O error on an indexed
                table): a temporary failure, like Postfix's lookup errors
    FileState   remembers which file a table was read from, for ``changed()``
    fold_key    the case folding applied to keys of exact-match tables
    logger      the ``postclient.maps`` logger every table warns through

A table answers ``lookup(key) -> str | None``.  Exact-match tables (hash,
texthash, inline, static) have ``fixed_keys = True``: they fold the key with
``fold_key`` themselves, and they take part in the partial-address lookups of
``postclient.maps.address`` (``user@domain`` without extension, ``user``,
``@domain``).  Pattern tables (regexp, pcre, cidr) see only full keys, exactly
as given, as in Postfix (DICT_FLAG_FIXED vs DICT_FLAG_PATTERN).

Reads no configuration parameters.
"""

import logging
import os

logger = logging.getLogger("postclient.maps")


def fold_key(key):
    """Fold a key of an exact-match table (Postfix DICT_FLAG_FOLD_FIX).

    Postfix lower-cases ASCII and, with SMTPUTF8 support, case-folds UTF-8;
    str.casefold() does both.  Bytes that were not valid UTF-8 arrive as
    lone surrogates (surrogateescape) and are left as they are.
    """
    return key.lower() if key.isascii() else key.casefold()


class TableError(Exception):
    """A lookup failed for a reason other than "not found"; try again later."""


class FileState:
    """Identity of a file at the time a table read it (device, inode, mtime, size)."""

    __slots__ = ("path", "_identity")

    def __init__(self, path, st=None):
        self.path = path
        self._identity = self._identify(st if st is not None else os.stat(path))

    @staticmethod
    def _identify(st):
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self):
        """True when the file was replaced, modified or removed since."""
        try:
            return self._identify(os.stat(self.path)) != self._identity
        except OSError:
            return True


class Table:
    """One opened lookup table.  Subclasses set ``kind`` and ``fixed_keys``."""

    kind = ""
    fixed_keys = True

    def __init__(self, spec):
        self.spec = spec

    def lookup(self, key):
        """Return the value for ``key``, or None when the table has no match."""
        raise NotImplementedError

    def items(self):
        """(key, value) pairs of an exact-match table, for ``postclient map -s``.

        Pattern tables have no list of keys and raise NotImplementedError.
        """
        raise NotImplementedError(f"{self.kind} tables cannot be listed")

    def changed(self):
        """True when the file behind the table changed since it was opened.

        Long-running processes use this the way Postfix daemons do: finish
        the current job, then exit so that a fresh process re-reads tables.
        """
        return False

    def close(self):
        """Release what the table holds open (only indexed tables hold any)."""

    def __repr__(self):
        return f"<{type(self).__name__} {self.spec!r}>"
