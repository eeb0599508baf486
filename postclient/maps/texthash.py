"""``texthash:FILE``: a postmap(1) source file read into memory.

Exports:
    TexthashTable   ``TexthashTable(spec, path)``

The file has the postmap source format (see ``source.py``): ``key value``
entries, ``#`` comments, blank lines, continuation lines.  Keys are
case-folded; a duplicate key keeps the first value and logs a warning, as
Postfix's texthash does.  Lookups are dict lookups; reading is linear in the
size of the file.

Reads no configuration parameters.
"""

import os

from .source import collect_entries, read_entries
from .table import FileState, Table, fold_key


class TexthashTable(Table):
    kind = "texthash"
    fixed_keys = True

    def __init__(self, spec, path):
        super().__init__(spec)
        self.path = path
        before = _stat(path)
        self._table = collect_entries(read_entries(path, self.kind), path, fold_key)
        self._state = FileState(path, before)

    def lookup(self, key):
        return self._table.get(fold_key(key))

    def items(self):
        return list(self._table.items())

    def changed(self):
        return self._state.changed()


def _stat(path):
    try:
        return os.stat(path)
    except OSError:
        return None  # read_entries() reports it with the table kind
