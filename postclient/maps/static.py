"""``static:value``: a table that returns the same value for every key.

Exports:
    StaticTable   ``StaticTable(spec, arg)``

``static:{ value with spaces }`` strips the braces and the whitespace inside
them (Postfix 3.x), so that the value may contain whitespace and commas and
still sit in a lookup-table list.  An empty value is an error: Postfix treats
an empty lookup result as a table error anyway.  Like Postfix, a static table
counts as an exact-match table, so it also answers partial address lookups.

Reads no configuration parameters.
"""

from postclient.config.errors import ConfigError

from .syntax import strip_braces
from .table import Table


class StaticTable(Table):
    kind = "static"
    fixed_keys = True

    def __init__(self, spec, arg):
        super().__init__(spec)
        if arg.startswith("{"):
            try:
                arg = strip_braces(arg)
            except ValueError as exc:
                raise ConfigError(spec, 0, f"bad static:name syntax: {exc}") from None
        if not arg:
            raise ConfigError(spec, 0, 'empty value; expected "static:value" or "static:{value}"')
        self.value = arg

    def lookup(self, key):
        return self.value
