"""Opening tables by ``type:name``, and lists of tables searched in order.

Exports:
    open_table       ``"hash:/etc/postclient/x"`` -> Table
    open_tables      a lookup-table-list parameter value -> TableList
    split_specs      the same value -> list of spec strings
    validate_spec    open a table to check it (``postclient check``)
    validate_tables  open every table of a list value to check them
    TableList        tables searched in order; ``lookup(key)``
    TABLE_TYPES      the known types, in the order documentation lists them

A spec is ``type:name``; the type ends at the first colon.  ``proxy:`` in
front of a spec is accepted and ignored (there is no proxymap service; the
table is opened directly), so that Postfix settings such as
``proxy:hash:/etc/postfix/x`` carry over.  A list value separates specs with
commas and/or whitespace, but never inside ``{...}``, so
``hash:/a, inline:{ a=b, c=d }`` is two tables.

Every problem is a ConfigError: an unknown type or malformed spec names the
spec; file problems name the file and, for syntax errors, the line.

Reads no configuration parameters (callers pass parameter values).
"""

from postclient.config.errors import ConfigError

from .cidr import CidrTable
from .hash import INDEXED_KINDS, HashTable
from .inline import InlineTable
from .pcre import PcreTable
from .regexp import RegexpTable
from .static import StaticTable
from .syntax import split_list
from .table import Table, logger
from .texthash import TexthashTable


def _indexed(kind):
    def open_indexed(spec, arg):
        return HashTable(spec, kind, arg)
    return open_indexed


_OPENERS = {
    "inline": InlineTable,
    "static": StaticTable,
    "texthash": TexthashTable,
    "regexp": RegexpTable,
    "pcre": PcreTable,
    "cidr": CidrTable,
    **{kind: _indexed(kind) for kind in INDEXED_KINDS},
}

TABLE_TYPES = ("inline", "static", "texthash", "regexp", "pcre", "cidr", "hash", "btree", "lmdb")


def open_table(spec):
    """Open the table named by ``type:name``; raises ConfigError."""
    if not isinstance(spec, str):
        raise TypeError(f"table spec must be a str, not {type(spec).__name__}")
    kind, colon, arg = spec.partition(":")
    if kind == "proxy" and colon:
        kind, colon, arg = arg.partition(":")
    if not colon or not kind:
        raise ConfigError(spec, 0, "expected a lookup table as \"type:name\""
                          f" (types: {', '.join(TABLE_TYPES)})")
    opener = _OPENERS.get(kind)
    if opener is None:
        raise ConfigError(spec, 0, f"unsupported lookup table type \"{kind}\""
                          f" (expected one of: {', '.join(TABLE_TYPES)})")
    if not arg:
        raise ConfigError(spec, 0, f"missing table name after \"{kind}:\"")
    return opener(spec, arg)


def split_specs(value):
    """Split a lookup-table-list value into specs (commas/whitespace, not in ``{}``)."""
    return split_list(value)


class TableList:
    """Tables searched in order; the first match wins (Postfix maps_find)."""

    def __init__(self, tables=(), value=""):
        self.tables = tuple(tables)
        self.value = value

    def lookup(self, key, *, fixed_only=False):
        """First value found for ``key``, or None.

        An empty key finds nothing, as in Postfix.  With ``fixed_only``,
        pattern tables (regexp, pcre, cidr) are skipped: they must only see
        full keys (see ``postclient.maps.address``).  A table that returns
        an empty string stops the search with a warning and gives None:
        Postfix treats an empty result as a table error.
        """
        if not key:
            return None
        for table in self.tables:
            if fixed_only and not table.fixed_keys:
                continue
            value = table.lookup(key)
            if value is not None:
                if value == "":
                    logger.warning("%s: lookup of \"%s\" returns an empty string result;"
                                   " tables should return no result when not found",
                                   table.spec, key)
                    return None
                return value
        return None

    def changed(self):
        """True when any table's file changed since it was opened."""
        return any(table.changed() for table in self.tables)

    def close(self):
        for table in self.tables:
            table.close()

    def __iter__(self):
        return iter(self.tables)

    def __len__(self):
        return len(self.tables)

    def __bool__(self):
        return bool(self.tables)

    def __repr__(self):
        return f"<TableList {[table.spec for table in self.tables]!r}>"


def open_tables(value):
    """Open every table of a lookup-table-list value (str, or a list of specs).

    An empty value gives an empty TableList, whose lookups find nothing.
    """
    if isinstance(value, str):
        specs = split_specs(value)
        text = value
    else:
        specs = [spec for item in value for spec in split_specs(item)]
        text = ", ".join(specs)
    tables = []
    try:
        for spec in specs:
            tables.append(open_table(spec))
    except BaseException:
        for table in tables:
            table.close()
        raise
    return TableList(tables, text)


def validate_spec(spec):
    """Open a table to check it; raises ConfigError, returns None."""
    open_table(spec).close()


def validate_tables(value):
    """Open every table of a list value to check it; raises ConfigError."""
    open_tables(value).close()


__all__ = ["TABLE_TYPES", "Table", "TableList", "open_table", "open_tables", "split_specs",
           "validate_spec", "validate_tables"]
