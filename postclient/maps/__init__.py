"""Lookup tables: Postfix's table types and the lists of tables parameters name.

Exports:
    open_table(spec) -> Table          ``"type:name"``; raises ConfigError
    open_tables(value) -> TableList    a lookup-table-list parameter value
    TableList                          ``.lookup(key)``, ``.tables``
    Table                              ``.lookup(key)``, ``.spec``, ``.kind``,
                                       ``.fixed_keys``, ``.changed()``, ``.close()``
    TableError                         a lookup failed (I/O), try again later
    validate_spec(spec)                open a table to check it
    validate_tables(value)             open every table of a list to check them
    split_specs(value)                 a list value -> specs
    TABLE_TYPES                        the supported types
    address.lookup_address             Postfix's lookup order for addresses

Types (one module each): inline, static, texthash, regexp, pcre, cidr, and
the indexed hash (alias btree, lmdb) built by ``postclient map``
(``postmap.py``).  docs/lookup-tables.md describes the syntax of each type,
how pcre and regexp patterns map onto Python ``re``, and the on-disk format
of the indexed type.  Warnings (duplicate keys, stale indexes, ...) go to
the ``postclient.maps`` logger.

Reads no configuration parameters: callers pass parameter values.
"""

from . import address
from .registry import (TABLE_TYPES, TableList, open_table, open_tables, split_specs,
                       validate_spec, validate_tables)
from .table import Table, TableError

__all__ = ["TABLE_TYPES", "Table", "TableError", "TableList", "address", "open_table",
           "open_tables", "split_specs", "validate_spec", "validate_tables"]
