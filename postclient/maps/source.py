"""Reading table source files: logical lines and ``key whitespace value``.

Exports:
    SPACE             the characters C's isspace() accepts
    open_source       open a table file as text (UTF-8, surrogateescape)
    logical_lines     (line number, text) for each logical line of a file
    text_lines        the same for text already in memory (inline bodies)
    parse_entry       one logical line -> (key, value), postmap(1) rules
    read_entries      (line number, key, value) for each entry of a file
    collect_entries   entries into a dict, duplicates handled as postmap does

Logical lines follow Postfix's readlline(): blank lines and lines whose first
non-whitespace character is ``#`` are ignored; a line that starts with
whitespace continues the previous one (the pieces are joined as they are,
without the newline); trailing whitespace is removed.  Line numbers are
1-based and name the first physical line of a logical line.  A logical line
that would start with whitespace (the first line of a file indented) is
ignored with a warning, as Postfix does.

Entries follow postmap(1): the key ends at the first whitespace that is not
inside double quotes (a backslash protects the next character; the quotes
stay part of the key); the value is the rest, trimmed.  A missing value or
an unbalanced quote is an error here (Postfix only warns and skips the line,
which silently loses the entry).

Files are read as UTF-8 with ``surrogateescape``, so 8-bit bytes survive.
Reads no configuration parameters.
"""

from postclient.config.errors import ConfigError

from .table import logger

SPACE = " \t\n\r\v\f"


def open_source(path, kind):
    """Open a table source file, or raise ConfigError naming the file."""
    try:
        return open(path, encoding="utf-8", errors="surrogateescape", newline="\n")
    except OSError as exc:
        raise ConfigError(path, 0, f"cannot open {kind} table: {exc.strerror or exc}") from None


def logical_lines(path, kind):
    """Yield (line number, logical line) for the file at ``path``."""
    with open_source(path, kind) as handle:
        try:
            yield from _join_lines(handle, path)
        except OSError as exc:
            raise ConfigError(path, 0, f"cannot read {kind} table: {exc.strerror or exc}") from None


def text_lines(lines, source):
    """Yield (line number, logical line) for a list of physical lines."""
    yield from _join_lines(lines, source)


def _join_lines(physical, source):
    parts = []
    first = 0
    for number, line in enumerate(physical, 1):
        line = line.rstrip("\n")
        stripped = line.lstrip(SPACE)
        if not stripped or stripped[0] == "#":
            continue
        if line[0] in SPACE:
            if parts:
                parts.append(line)
                continue
            logger.warning('%s:%d: logical line must not start with whitespace: "%.30s"',
                           source, number, line)
            continue
        if parts:
            yield first, "".join(parts).rstrip(SPACE)
        parts = [line]
        first = number
    if parts:
        yield first, "".join(parts).rstrip(SPACE)


def parse_entry(line):
    """Split a logical line into (key, value) as postmap(1) does.

    Raises ValueError with what was expected.
    """
    in_quotes = False
    index = 0
    length = len(line)
    while index < length:
        char = line[index]
        if char == "\\":
            index += 1
            if index >= length:
                break
        elif char in SPACE:
            if not in_quotes:
                break
        elif char == '"':
            in_quotes = not in_quotes
        index += 1
    if in_quotes:
        raise ValueError(f"unbalanced '\"' in '{line}' (expected a closing '\"' in the key)")
    key = line[:index]
    value = line[index:].strip(SPACE)
    if not key or not value:
        raise ValueError("expected format: key whitespace value")
    return key, value


def read_entries(path, kind):
    """Yield (line number, key, value) for each entry of a source file."""
    for number, line in logical_lines(path, kind):
        try:
            key, value = parse_entry(line)
        except ValueError as exc:
            raise ConfigError(path, number, str(exc)) from None
        if key.endswith(":"):
            logger.warning('%s:%d: record is in "key: value" format; is this an alias file?',
                           path, number)
        yield number, key, value


def collect_entries(entries, source, fold, duplicates="warn", into=None):
    """Store (line number, key, value) entries in a dict under folded keys.

    ``duplicates`` is what postmap does with a key seen before: "warn"
    (default: keep the first, warn), "ignore" (keep the first silently,
    postmap -w) or "replace" (keep the last, postmap -r).
    """
    table = {} if into is None else into
    for number, key, value in entries:
        key = fold(key)
        if key in table:
            if duplicates == "replace":
                table[key] = value
            elif duplicates == "warn":
                logger.warning('%s:%d: duplicate entry: "%s"', source, number, key)
            continue
        table[key] = value
    return table
