"""Parameter value types: text from main.cf in, typed Python value out.

Exports the type objects BOOLEAN, INTEGER, TIME, SIZE, STRING, LIST and MAPS,
and split_list().  Each type has ``parse(text, param) -> value`` which raises
ValueError with a message saying what was expected; the caller (the Config
object) adds file and line.  ``param`` is the registry entry, which carries the
bounds and, for times, the default unit.

Postfix semantics: booleans are yes/no; a time is a number with an optional
unit s/m/h/d/w (a bare number takes the parameter's default unit); lists are
separated by commas and/or whitespace, and ``{ ... }`` keeps one element that
contains separators (Postfix 3.x).
"""

import re

TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}

_TIME_RE = re.compile(r"^(\d+)([smhdw]?)$", re.IGNORECASE)
_SIZE_RE = re.compile(r"^(\d+)([kmg]?)$", re.IGNORECASE)
_INT_RE = re.compile(r"^-?\d+$")


def split_list(text):
    """Split a list value on commas/whitespace, keeping ``{ ... }`` groups whole.

    A group's braces are removed and its inside stripped, as in Postfix 3.x
    (``{ key = value, with commas }``).  Braces inside a group nest.
    """
    items = []
    current = []
    depth = 0
    for char in text:
        if depth:
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            current.append(char)
            continue
        if char == "{":
            depth = 1
            current.append(char)
        elif char in ", \t\r\n":
            if current:
                items.append("".join(current))
                current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f'missing "}}" in list value "{text.strip()}"')
    if current:
        items.append("".join(current))
    return items


def _check_bounds(number, param, shown):
    if number in param.also_allowed:
        return number
    low, high = param.minimum, param.maximum
    if low is not None and number < low:
        raise ValueError(f'{shown} is below the minimum {param.format_bound(low)}')
    if high is not None and number > high:
        raise ValueError(f'{shown} is above the maximum {param.format_bound(high)}')
    return number


class _Type:
    name = "?"
    expected = ""

    def parse(self, text, param):
        raise NotImplementedError


class _Boolean(_Type):
    name = "boolean"

    def parse(self, text, param):
        word = text.strip().lower()
        if word in ("yes", "true"):
            return True
        if word in ("no", "false"):
            return False
        raise ValueError(f'bad boolean value "{text}" (expected yes or no)')


class _Integer(_Type):
    name = "integer"

    def parse(self, text, param):
        word = text.strip()
        if not _INT_RE.match(word):
            raise ValueError(f'bad integer value "{text}" (expected a whole number)')
        return _check_bounds(int(word), param, f'value "{word}"')


class _Time(_Type):
    """Seconds as an int; the unit letter is optional."""

    name = "time"

    def parse(self, text, param):
        word = text.strip()
        match = _TIME_RE.match(word)
        if not match:
            raise ValueError(f'bad time value "{text}" (expected e.g. 30s, 5m)')
        unit = (match.group(2) or param.unit or "s").lower()
        seconds = int(match.group(1)) * TIME_UNITS[unit]
        return _check_bounds(seconds, param, f'time "{word}"')


class _Size(_Type):
    """Bytes as an int; k/m/g suffixes (binary) are accepted besides bare numbers."""

    name = "size"

    def parse(self, text, param):
        word = text.strip()
        match = _SIZE_RE.match(word)
        if not match:
            raise ValueError(f'bad size value "{text}" (expected a number of bytes, e.g. 10240000)')
        size = int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
        return _check_bounds(size, param, f'size "{word}"')


class _String(_Type):
    name = "string"

    def parse(self, text, param):
        value = text.strip()
        if param.choices and value not in param.choices:
            raise ValueError(f'bad value "{value}" (expected one of: {", ".join(param.choices)})')
        return value


class _List(_Type):
    """A list of strings; with ``choices`` every element must be one of them."""

    name = "list"

    def parse(self, text, param):
        items = split_list(text)
        if param.choices:
            for item in items:
                if item.lower().lstrip("!") not in param.choices:
                    raise ValueError(
                        f'bad list element "{item}" (expected any of: {", ".join(param.choices)})')
        return items


class _Maps(_List):
    """A list of lookup tables (``type:name``); opened by postclient.maps, not here."""

    name = "maps"

    def parse(self, text, param):
        items = split_list(text)
        for item in items:
            kind, colon, rest = item.partition(":")
            if not colon or not kind or not rest:
                raise ValueError(f'bad lookup table "{item}" (expected type:name, e.g. hash:/etc/postclient/generic)')
        return items


BOOLEAN = _Boolean()
INTEGER = _Integer()
TIME = _Time()
SIZE = _Size()
STRING = _String()
LIST = _List()
MAPS = _Maps()

BY_NAME = {t.name: t for t in (BOOLEAN, INTEGER, TIME, SIZE, STRING, LIST, MAPS)}
