"""``inline:{key=value, ...}``: a small exact-match table written in place.

Exports:
    InlineTable   the table; ``InlineTable(spec, body)``
    parse_inline  ``{a=b, { c = d, e }}`` -> {"a": "b", "c": "d, e"}

Syntax (Postfix 3.x dict_inline): the whole body is one ``{...}`` group.
Elements are separated by commas and/or whitespace; an element is
``key=value``, or ``{ key = value }`` when the value contains commas or
whitespace (spaces around ``=`` are then allowed).  A key may be written in
double quotes to contain whitespace or ``=`` (the quotes stay part of the
key, as with postmap).  Keys are case-folded; a key given twice keeps the
last value (Postfix stores inline tables in a plain hash without duplicate
checks).  An empty table is an error, and so is an empty value (Postfix would
accept it and then fail every lookup that returns it).

Reads no configuration parameters.
"""

from postclient.config.errors import ConfigError

from .source import SPACE
from .syntax import balanced_length, split_list, strip_braces
from .table import Table, fold_key


def _split_name_value(text):
    """``key = value`` -> (key, value), quoted keys allowed (split_qnameval)."""
    text = text.lstrip(SPACE)
    if not text:
        raise ValueError("no key found; expected format: key = value")
    in_quotes = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 1
            if index >= len(text):
                break
        elif char in SPACE or char == "=":
            if not in_quotes:
                break
        elif char == '"':
            in_quotes = not in_quotes
        index += 1
    if in_quotes:
        raise ValueError("unbalanced '\"'")
    key = text[:index]
    rest = text[index:].lstrip(SPACE)
    if not key:
        raise ValueError("missing attribute name; expected format: key = value")
    if not rest.startswith("="):
        raise ValueError(f"missing '=' after attribute name \"{key}\"")
    return key, rest[1:].strip(SPACE)


def parse_inline(body):
    """Parse an inline table body; raises ValueError describing what was expected."""
    length = balanced_length(body)
    if length == 0 or length != len(body) or length == 2:
        raise ValueError('bad syntax; need "inline:{name=value...}"')
    table = {}
    for element in split_list(body[1:-1]):
        if element.startswith("{"):
            element = strip_braces(element)
        key, value = _split_name_value(element)
        if not value:
            raise ValueError(f"empty value for \"{key}\" (an empty lookup result is an error)")
        table[fold_key(key)] = value
    if not table:
        raise ValueError('empty table; need "inline:{name=value...}"')
    return table


class InlineTable(Table):
    """Exact-match table whose entries are written in the table name."""

    kind = "inline"
    fixed_keys = True

    def __init__(self, spec, body):
        super().__init__(spec)
        try:
            self._table = parse_inline(body)
        except ValueError as exc:
            raise ConfigError(spec, 0, str(exc)) from None

    def lookup(self, key):
        return self._table.get(fold_key(key))

    def items(self):
        return list(self._table.items())
